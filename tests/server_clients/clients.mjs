// Drives `llava serve` with the official OpenAI and Ollama JavaScript clients, the way users do:
// chat with a base64 image (whole and streamed), Ollama chat and generate, the model lists and a
// refused request. Prints one JSON object of what came back; tests/test_server_clients.py checks it.
// usage: node clients.mjs '{"base": "http://127.0.0.1:PORT", "image_b64": ..., "mime": ..., "question": ...}'
import OpenAI from "openai";
import { Ollama } from "ollama";

const cfg = JSON.parse(process.argv[2]);
const out = {};

const openai = new OpenAI({ baseURL: `${cfg.base}/v1`, apiKey: cfg.api_key ?? "unused", maxRetries: 0 });
const messages = [{
  role: "user",
  content: [
    { type: "image_url", image_url: { url: `data:${cfg.mime};base64,${cfg.image_b64}` } },
    { type: "text", text: cfg.question },
  ],
}];

const whole = await openai.chat.completions.create({
  model: "test-model", messages, temperature: 0, max_tokens: 16,
});
out.openai = {
  content: whole.choices[0].message.content,
  finish_reason: whole.choices[0].finish_reason,
  usage: whole.usage,
};

const stream = await openai.chat.completions.create({
  model: "test-model", messages, temperature: 0, max_completion_tokens: 16, stream: true,
  stream_options: { include_usage: true },
});
let text = "", finish = null, usage = null, chunks = 0;
for await (const chunk of stream) {
  chunks++;
  if (chunk.usage) usage = chunk.usage;
  for (const c of chunk.choices) {
    text += c.delta?.content ?? "";
    if (c.finish_reason) finish = c.finish_reason;
  }
}
out.openai_stream = { content: text, finish_reason: finish, usage, chunks };

try {
  await openai.chat.completions.create({ model: "test-model", messages, n: 3 });
  out.openai_error = null;
} catch (e) {
  out.openai_error = { status: e.status, message: e.message, param: e.param ?? e.error?.param ?? null };
}
out.openai_models = (await openai.models.list()).data.map((m) => m.id);

const ollama = new Ollama({ host: cfg.base, headers: cfg.api_key ? { Authorization: `Bearer ${cfg.api_key}` } : {} });
const options = { temperature: 0, num_predict: 16 };
const chatMessages = [{ role: "user", content: cfg.question, images: [cfg.image_b64] }];

const chat = await ollama.chat({ model: "test-model", messages: chatMessages, options, stream: false });
out.ollama_chat = { content: chat.message.content, done: chat.done, eval_count: chat.eval_count };

let ctext = "", last = null;
for await (const part of await ollama.chat({ model: "test-model", messages: chatMessages, options, stream: true })) {
  ctext += part.message.content;
  last = part;
}
out.ollama_chat_stream = { content: ctext, done: last.done, done_reason: last.done_reason };

const gen = await ollama.generate({
  model: "test-model", prompt: cfg.question, images: [cfg.image_b64], options, stream: false,
});
out.ollama_generate = { response: gen.response, done: gen.done };

let gtext = "";
for await (const part of await ollama.generate({
  model: "test-model", prompt: cfg.question, images: [cfg.image_b64], options, stream: true,
})) {
  gtext += part.response;
}
out.ollama_generate_stream = { response: gtext };

out.ollama_models = (await ollama.list()).models.map((m) => m.name);
const shown = await ollama.show({ model: "test-model" });
out.ollama_show = { family: shown.details.family, capabilities: shown.capabilities,
                    parameter_count: shown.model_info["general.parameter_count"] };
out.ollama_ps = (await ollama.ps()).models.map((m) => m.name);
try {
  await ollama.chat({ model: "test-model", messages: chatMessages, format: "json", stream: false });
  out.ollama_error = null;
} catch (e) {
  out.ollama_error = { status: e.status_code ?? null, message: e.error ?? e.message };
}

console.log(JSON.stringify(out));

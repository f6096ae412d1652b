// Asks `llava serve` questions about images with the official OpenAI client, as a user would:
// each image inline as a base64 data URL, greedy, not streamed. Used by tools/eval_tiny_llava.py
// to check that answers over HTTP are the CLI's.
// usage: node ask.mjs CONFIG.json, where CONFIG is
//   {"base": "http://127.0.0.1:PORT", "jobs": 2, "items": [{"path": ..., "mime": ..., "question": ...}]}
// Prints a JSON list, one {"text": ...} or {"error": ...} per item, in order.
import OpenAI from "openai";
import { readFileSync } from "node:fs";

const cfg = JSON.parse(readFileSync(process.argv[2], "utf8"));
const openai = new OpenAI({ baseURL: `${cfg.base}/v1`, apiKey: "unused", maxRetries: 0, timeout: 120000 });
const answers = new Array(cfg.items.length);
let next = 0;

async function worker() {
  while (next < cfg.items.length) {
    const k = next++;
    const item = cfg.items[k];
    const data = readFileSync(item.path).toString("base64");
    try {
      const r = await openai.chat.completions.create({
        model: "tiny-llava-shapes", temperature: 0, max_tokens: 64,
        messages: [{
          role: "user",
          content: [
            { type: "image_url", image_url: { url: `data:${item.mime};base64,${data}` } },
            { type: "text", text: item.question },
          ],
        }],
      });
      answers[k] = { text: r.choices[0].message.content };
    } catch (e) {
      answers[k] = { error: `${e.status ?? ""} ${e.message}` };
    }
  }
}

await Promise.all(Array.from({ length: Math.max(1, cfg.jobs ?? 1) }, worker));
process.stdout.write(JSON.stringify(answers));

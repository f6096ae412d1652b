// Regenerates tests/data/tokenizer_vectors/hf_tokenizers_js.json: expected ids and decoded text
// for adversarial strings, made by the reference JavaScript port of Hugging Face tokenizers
// (npm @huggingface/tokenizers, pinned in tests/npm/package.json) on the llava-1.5 tokenizer and on
// Metaspace variants of it shaped like Mistral's tokenizer.json files. CI reads the JSON; it does
// not need node. Usage:
//   (cd tests/npm && npm ci) && node tools/gen_tokenizer_vectors.mjs
// The 1 MB mix is not stored: tests/test_text_tokenizer_vectors.c rebuilds it from the seed, the
// pieces and the ranges written into the JSON, with the same xorshift32 steps as random_mix here.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const pkg = path.join(root, "tests/npm/node_modules/@huggingface/tokenizers");
const { Tokenizer } = await import(path.join(pkg, "dist/tokenizers.mjs"));
const version = JSON.parse(fs.readFileSync(path.join(pkg, "package.json"))).version;
const model_dir = path.join(root, "tests/data/llava-1.5-7b-hf");
const base_json = JSON.parse(fs.readFileSync(path.join(model_dir, "tokenizer.json")));
const config = JSON.parse(fs.readFileSync(path.join(model_dir, "tokenizer_config.json")));

// ---------------------------------------------------------------------------------------------
// Tokenizer variants (the C test builds the same ones from the same file)

function metaspace(scheme) {
  return { type: "Metaspace", replacement: "\u2581", prepend_scheme: scheme, split: false };
}

const variants = {
  llava: (j) => j,
  // Mistral-7B-Instruct-v0.2/v0.3 style: no normalizer, Metaspace pre-tokenizer and decoder.
  metaspace_first: (j) => {
    j.normalizer = null;
    j.pre_tokenizer = metaspace("first");
    j.decoder = metaspace("first");
    return j;
  },
  metaspace_always: (j) => {
    j.normalizer = null;
    j.pre_tokenizer = metaspace("always");
    j.decoder = metaspace("always");
    return j;
  },
  // Added-token flags: <image> takes the whitespace around it.
  image_strip: (j) => {
    for (const t of j.added_tokens) if (t.content === "<image>") t.lstrip = t.rstrip = true;
    return j;
  },
};

// ---------------------------------------------------------------------------------------------
// Deterministic text

class Xorshift32 {
  constructor(seed) { this.x = seed >>> 0 || 1; }
  next() {
    let x = this.x;
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    this.x = x;
    return x;
  }
  below(n) { return this.next() % n; }
}

// Pieces of the random texts (written into the JSON for the C test). No U+FEFF or U+0085: next
// to an lstrip/rstrip token, this port strips by JavaScript's whitespace, which counts U+FEFF
// and not U+0085, where Hugging Face strips by Unicode White_Space, which is the reverse.
const PIECES = [
  "the", " the", "The", " of", " and", " to", " in", " is", " that", " image", " What",
  " shown", "?", ".", ",", "!", ":", ";", "'", "\"", "(", ")", "-", "--", "...",
  " ", "  ", "   ", "    ", "\t", "\n", "\n\n", "\r\n", " \n", "\n ",
  "0", "1", "42", "2024", "3.14", "1,000", "007",
  "<image>", "<s>", "</s>", "<unk>", "<pad>", "<", ">", "<im", "age>",
  "\u2581", "\u2581\u2581", "_", "__init__",
  "é", "e\u0301", "ñ", "ü", "ß", "Ω", "Ж", "مرحبا", "שלום", "नमस्ते", "ไทย",
  "你好", "世界", "日本語", "한국어", "。", "，",
  "😀", "🎉", "👍🏽", "👨‍👩‍👧", "🇫🇷", "∑", "√", "€", "\u00a0", "\u3000", "\u200b",
  "http://example.com/a?b=c", "def f(x):", "    return x", "{\"k\": [1, 2]}",
  "supercalifragilisticexpialidocious", "antidisestablishment", "ization", "ing",
];

// Code point ranges for single random characters: ASCII printable, Latin-1 and Latin
// Extended, combining marks, Greek/Cyrillic, CJK, Hangul, emoji, astral math letters.
const RANGES = [
  [0x20, 0x7e], [0xa1, 0x24f], [0x300, 0x36f], [0x370, 0x4ff], [0x4e00, 0x9fff],
  [0xac00, 0xd7a3], [0x1f300, 0x1f64f], [0x1d400, 0x1d7ff], [0x1, 0x1f],
];

function random_piece(rng) {
  if (rng.below(8) === 0) {
    const [lo, hi] = RANGES[rng.below(RANGES.length)];
    return String.fromCodePoint(lo + rng.below(hi - lo + 1));
  }
  return PIECES[rng.below(PIECES.length)];
}

function random_text(rng, pieces) {
  let s = "";
  for (let i = 0; i < pieces; i++) s += random_piece(rng);
  return s;
}

const utf8 = new TextEncoder();

// The 1 MB mix: random pieces until at least 1 MiB of UTF-8.
function random_mix(seed, bytes) {
  const rng = new Xorshift32(seed);
  const parts = [];
  let n = 0;
  while (n < bytes) {
    const p = random_piece(rng);
    parts.push(p);
    n += utf8.encode(p).length;
  }
  return parts.join("");
}

// The mix without spaces, tabs, CR or LF, cut after the first whole character that reaches
// nospace_bytes of UTF-8: long runs with no metaspace, where BPE sees very long words.
function nospace_text(mix, bytes) {
  const chars = [...mix.replace(/[ \t\n\r]/g, "")];
  let n = 0, k = 0;
  while (k < chars.length && n < bytes) n += utf8.encode(chars[k++]).length;
  return chars.slice(0, k).join("");
}

// FNV-1a 32 over the ids as little-endian 32-bit words.
function fnv_ids(ids) {
  let h = 0x811c9dc5;
  for (const id of ids) {
    for (let k = 0; k < 4; k++) {
      h ^= (id >>> (8 * k)) & 0xff;
      h = Math.imul(h, 0x01000193) >>> 0;
    }
  }
  return h >>> 0;
}

function fnv_bytes(bytes) {
  let h = 0x811c9dc5;
  for (const b of bytes) {
    h ^= b;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

// ---------------------------------------------------------------------------------------------
// Cases

const FIXED = [
  "", " ", "  ", "   ", "          ", "\t", "\t\t", "\n", "\n\n", "\n\n\n", " \n", "\n ", "\r\n",
  " \t \n ", "hello", " hello", "hello ", "  hello", "hello  ", "  hello  world  ", "Hello World",
  "hello\tworld", "\tindented", "line one\nline two\n", "trailing newline\n", "\nleading newline",
  "a  b   c    d", "0", "7", "12345", "3.14159", "1,000,000", "2024-01-01", "+1 (555) 010-9999",
  "1234567890123456789", "v1.2.3", "0x1F", "😀", "😀😀😀", " 😀", "😀 ", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷🇩🇪",
  "👍🏽", "你好，世界", "日本語のテキストです。", "한국어 텍스트", "中文 mixed with English",
  "e\u0301", "a\u0301\u0302\u0303", "Z\u0324\u0354\u0367\u0311\u0313a\u0308\u0356\u032dl",
  "ñandú", "Ærøskøbing", "straße", "İstanbul", "Ελληνικά", "Русский текст", "مرحبا بالعالم",
  "שלום עולם", "नमस्ते दुनिया", "สวัสดีชาวโลก", "∑∫√∞≠≤", "€£¥₹", "𝕳𝖊𝖑𝖑𝖔", "\u{10ffff}",
  "\u{e000}", "\u0000", "a\u0000b", "\u0001\u0002\u001f", "\u007f", "\u200b", "a\u200bb",
  "\ufeff", "\ufeffhello", "\u00a0", "a\u00a0b", "\u3000", "\u2028", "\u0085",
  "<image>", "<image><image>", "<image>\n", "\n<image>", " <image> ", "  <image>  ",
  "<image>What", "What<image>", "USER: <image>\nWhat is shown in this image? ASSISTANT:",
  "USER: <image>\n<image>\nCompare the two images. ASSISTANT:",
  "<s>", "</s>", "<s>hello</s>", "<s> hello </s>", "<unk>", "<pad>", "<s><s></s></s>",
  "< image>", "<imag", "<image", "image>", "<<image>>", "<IMAGE>", "</s", "<s",
  "\u2581", "\u2581\u2581", "\u2581hello", "hello\u2581", "\u2581 \u2581", "_hello_",
  "def f(x):\n    return x ** 2\n", "{\"key\": [1, 2, {\"a\": null}]}", "https://llava-vl.github.io/",
  "supercalifragilisticexpialidocious", "Pneumonoultramicroscopicsilicovolcanoconiosis",
  "a".repeat(100), "ab".repeat(100), " ".repeat(50), "\n".repeat(20), "\t".repeat(10),
  "9".repeat(40), "😀".repeat(20), "中".repeat(30), "<image>".repeat(10),
  "The quick brown fox jumps over the lazy dog.", "THE QUICK BROWN FOX", "tHe QuIcK",
  "It's a dog's life; isn't it?", "\"quoted\" and 'single'", "(parens) [brackets] {braces}",
  "email@example.com", "#hashtag @mention", "C++ and C# and F#", "x = y + z * 2",
];

function make_cases(rng) {
  const texts = FIXED.slice();
  for (let i = 0; i < 300; i++) texts.push(random_text(rng, 1 + rng.below(40)));
  return texts;
}

function first_token_safe(tokens) {
  // The Metaspace decoder of this port strips one leading space of the first token; Hugging
  // Face's drops every replacement character of it. They agree when the first token has at most
  // that one leading replacement character.
  if (tokens.length === 0) return true;
  const t = tokens[0];
  const count = [...t].filter((c) => c === "\u2581").length;
  return count === 0 || (count === 1 && t.startsWith("\u2581"));
}

const out = {
  description:
    "Expected token ids and decoded text for adversarial strings, produced by the reference " +
    "JavaScript port of Hugging Face tokenizers. Regenerate with tools/gen_tokenizer_vectors.mjs.",
  reference: `npm @huggingface/tokenizers ${version}`,
  tokenizer_files: "tests/data/llava-1.5-7b-hf/tokenizer.json + tokenizer_config.json",
  variants: {
    llava: "the files as they are (legacy LLaMA normalizer, no pre-tokenizer)",
    metaspace_first:
      "normalizer null; pre_tokenizer and decoder Metaspace(replacement U+2581, prepend_scheme " +
      "first, split false), as Mistral-7B-Instruct-v0.2/v0.3 tokenizer.json files",
    metaspace_always: "as metaspace_first with prepend_scheme always",
    image_strip: "llava with lstrip and rstrip true on the <image> added token",
  },
  fields: {
    text: "input string",
    ids: "encode(text, add_special_tokens=false)",
    ids_special: "encode(text, add_special_tokens=true)",
    decoded: "decode(ids_special) keeping special tokens; null where the port's Metaspace decoder is known to differ from Hugging Face's",
    decoded_skip_special: "decode(ids_special, skip_special_tokens=true); null likewise",
  },
  seed: 20240611,
  mix_seed: 12345,
  mix_bytes: 1048576,
  nospace_bytes: 262144,
  mix_generator:
    "xorshift32 (x ^= x << 13; x ^= x >> 17; x ^= x << 5) from mix_seed; per piece: if " +
    "next() % 8 == 0, a code point lo + next() % (hi - lo + 1) of ranges[next() % len], else " +
    "pieces[next() % len]; pieces appended until at least mix_bytes of UTF-8. nospace: the " +
    "mix without bytes 0x20, 0x09, 0x0A, 0x0D, cut after the first whole character that " +
    "reaches nospace_bytes",
  pieces: PIECES,
  ranges: RANGES,
  cases: [],
  mix: {},
};

for (const [name, make] of Object.entries(variants)) {
  const tj = make(JSON.parse(JSON.stringify(base_json)));
  const tok = new Tokenizer(tj, config);
  const rng = new Xorshift32(out.seed);
  for (const text of make_cases(rng)) {
    const plain = tok.encode(text, { add_special_tokens: false });
    const special = tok.encode(text, { add_special_tokens: true });
    const kept = special.tokens;
    const skipped = kept.filter((t) => !tok.special_tokens.includes(t));
    const meta = name.startsWith("metaspace");
    const dec = special.ids.length ? tok.decode(special.ids) : "";
    const dec_skip = special.ids.length ? tok.decode(special.ids, { skip_special_tokens: true }) : "";
    out.cases.push({
      tokenizer: name,
      text,
      ids: plain.ids,
      ids_special: special.ids,
      decoded: !meta || first_token_safe(kept) ? dec : null,
      decoded_skip_special: !meta || first_token_safe(skipped) ? dec_skip : null,
    });
  }
  const mix = random_mix(out.mix_seed, out.mix_bytes);
  const t0 = Date.now();
  const enc = tok.encode(mix, { add_special_tokens: false });
  const ids = enc.ids;
  const ms = Date.now() - t0;
  const text = tok.decode(ids);
  const safe = !name.startsWith("metaspace") || first_token_safe(enc.tokens);
  out.mix[name] = {
    text_bytes: utf8.encode(mix).length,
    text_fnv1a32: fnv_bytes(utf8.encode(mix)),
    count: ids.length,
    ids_fnv1a32: fnv_ids(ids),
    first_ids: ids.slice(0, 32),
    last_ids: ids.slice(-32),
    decoded_fnv1a32: safe ? fnv_bytes(utf8.encode(text)) : null,
  };
  const ns = nospace_text(mix, out.nospace_bytes);
  const t1 = Date.now();
  const ns_ids = tok.encode(ns, { add_special_tokens: false }).ids;
  out.mix[name].nospace = {
    text_bytes: utf8.encode(ns).length,
    text_fnv1a32: fnv_bytes(utf8.encode(ns)),
    count: ns_ids.length,
    ids_fnv1a32: fnv_ids(ns_ids),
    first_ids: ns_ids.slice(0, 32),
  };
  console.error(`${name}: nospace ${ns_ids.length} ids in ${Date.now() - t1} ms`);
  console.error(`${name}: ${out.cases.filter((c) => c.tokenizer === name).length} cases, mix ${ids.length} ids in ${ms} ms`);
}

const dest = path.join(root, "tests/data/tokenizer_vectors/hf_tokenizers_js.json");
fs.mkdirSync(path.dirname(dest), { recursive: true });
// One case per line: compact, and diffs stay readable.
const { cases, ...head } = out;
const head_text = JSON.stringify(head, null, 1);
const body = cases.map((c) => " " + JSON.stringify(c)).join(",\n");
fs.writeFileSync(dest, head_text.slice(0, -2) + ',\n "cases": [\n' + body + "\n ]\n}\n");
console.error(`wrote ${dest}`);

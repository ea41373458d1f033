/* pgcorpus.h: the deterministic multilingual test corpus shared by tests/test_encode.c and
 * bench/bench_encode.c: English words mixed with accented Latin, Greek, Cyrillic, CJK, emoji,
 * combining marks, NFKC-sensitive characters, odd spaces, tabs and long or empty lines. */
#ifndef PGCORPUS_H
#define PGCORPUS_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct sbuf {
  char *p;
  size_t len, cap;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t c = b->cap ? b->cap : 4096;
    while (c < b->len + n + 1) c *= 2;
    b->p = realloc(b->p, c);
    if (!b->p) abort(); /* test and benchmark helper: no memory, no run */
    b->cap = c;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}
static void sb_puts(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_cp(sbuf *b, uint32_t c) {
  char u[4];
  size_t n;
  if (c < 0x80) {
    u[0] = (char)c;
    n = 1;
  } else if (c < 0x800) {
    u[0] = (char)(0xC0 | (c >> 6));
    u[1] = (char)(0x80 | (c & 0x3F));
    n = 2;
  } else if (c < 0x10000) {
    u[0] = (char)(0xE0 | (c >> 12));
    u[1] = (char)(0x80 | ((c >> 6) & 0x3F));
    u[2] = (char)(0x80 | (c & 0x3F));
    n = 3;
  } else {
    u[0] = (char)(0xF0 | (c >> 18));
    u[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    u[2] = (char)(0x80 | ((c >> 6) & 0x3F));
    u[3] = (char)(0x80 | (c & 0x3F));
    n = 4;
  }
  sb_put(b, u, n);
}

static uint64_t rnd(uint64_t *s) { /* splitmix64 */
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
static size_t rnd_below(uint64_t *s, size_t n) { return (size_t)(rnd(s) % n); }
#define PICK(s, arr) ((arr)[rnd_below((s), sizeof(arr) / sizeof((arr)[0]))])

static const char *const kEnglish[] = {
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "with", "as", "was", "on", "be",
    "at", "by", "this", "have", "from", "or", "one", "had", "not", "but", "what", "all", "were",
    "when", "we", "there", "can", "an", "your", "which", "their", "said", "if", "do", "will",
    "each", "about", "how", "up", "out", "them", "then", "she", "many", "some", "so", "these",
    "would", "other", "into", "has", "more", "her", "two", "like", "him", "see", "time", "could",
    "no", "make", "than", "first", "been", "its", "who", "now", "people", "my", "made", "over",
    "did", "down", "only", "way", "find", "use", "may", "water", "long", "little", "very",
    "after", "words", "called", "just", "where", "most", "know", "government", "information",
    "university", "understanding", "responsibility", "parameter", "golf", "tokenizer",
    "compression", "international", "development", "environment", "relationship", "approximately",
    "don't", "it's", "we're", "o'clock", "e-mail", "well-known", "state-of-the-art", "COVID-19",
    "https://example.com/a/b?c=1&d=2", "user@example.org", "#hashtag", "@mention", "C++",
    "x86_64", "snake_case", "camelCase", "HTTP/1.1", "3.14159", "1,000,000", "$19.99", "50%",
    "(parenthesised)", "[bracketed]", "{braced}", "<tag>", "\"quoted\"", "'single'", "--",
    "...", "?!", ";", ":", "/", "\\", "|", "~", "`code`", "**bold**", "_under_", "#", "&amp;",
};
static const char *const kAccented[] = {
    "café", "naïve", "résumé", "façade", "Straße", "Ångström", "Œuvre", "œil", "ñandú",
    "Łódź", "český", "Ærøskøbing", "São Paulo", "Bogotá", "Zürich", "Kraków", "İstanbul",
    "déjà vu", "jalapeño", "Dvořák", "Čapek", "Þór", "ðæ", "ÿ", "Ÿ", "ǅ", "ǈ", "ı", "ß", "ẞ",
    "Mötley", "coöperate", "Škoda", "Ålesund", "Tromsø", "Hà Nội", "Việt Nam", "ễ", "Ɛ",
};
static const char *const kGreek[] = {
    "αλφάβητο", "Ελλάδα", "λόγος", "φιλοσοφία", "ΑΘΗΝΑ", "καλημέρα", "ψυχή", "ω", "Σίσυφος",
    "ΐ", "ς", "µ", "Ω", "ϐ", "ϑ", "ϕ", "ᾳ", "ἀρχή",
};
static const char *const kCyrillic[] = {
    "привет", "Москва", "язык", "ПРАВДА", "ёжик", "Ёлка", "україна", "ґанок", "беларусь",
    "српски", "Љубљана", "щи", "ъ", "ы", "Ӂ", "ѣ",
};
static const char *const kCJK[] = {
    "你好", "世界", "中华人民共和国", "日本語", "東京", "ひらがな", "カタカナ", "한국어", "서울",
    "漢字", "繁體字", "。", "、", "「引用」", "『書名』", "〜", "ー", "𠀋", "𪚲", "々", "〆",
    "가나다라마바사", "ㄱㄴㄷ", "ไทย", "ภาษา", "हिन्दी", "नमस्ते", "العربية", "مرحبا", "עברית",
    "שלום", "ქართული", "Հայերեն", "አማርኛ",
};
static const char *const kEmoji[] = {
    "😀", "😂", "👍", "👍🏽", "👨‍👩‍👧", "🇫🇷", "🇯🇵", "❤️", "✨", "🎉", "🤖", "🧠", "⚽",
    "☃", "♥", "★", "☺️", "🏳️‍🌈", "🫠", "🐍", "🦀", "1️⃣", "©", "®",
};
/* Combining marks, in the decomposed form NFKC composes (or cannot). */
static const char *const kCombining[] = {
    "e\xCC\x81", "a\xCC\x88", "n\xCC\x83", "o\xCC\x82\xCC\x81", "A\xCC\x8A",
    "Z\xCD\x91\xCD\x92\xCC\x9F", "\xCC\x81", "x\xCC\xB6", "i\xCC\x87", "\xE0\xA4\x95\xE0\xA5\x8D",
    "\xE1\x84\x80\xE1\x85\xA1", "u\xCC\x88\xCC\x81", "q\xCC\xA3\xCC\x87",
};
/* Characters NFKC maps to something else. */
static const char *const kNfkc[] = {
    "ＡＢＣ", "ｆｕｌｌ", "１２３", "！", "？", "（全角）", "ﬁ", "ﬂ", "ﬀ", "ﬃ", "ﬆ", "x²", "³",
    "ⁿ", "H₂O", "½", "¼", "①", "⑳", "㎏", "㎞", "℃", "№", "™", "…", "Ⅻ", "ⅷ", "ｶﾀｶﾅ", "ﾞ",
    "ｱｲｳ", "\xC2\xA0", "\xE3\x80\x80", "\xE2\x80\x83", "\xE2\x80\x8B", "\xE2\x80\x8D",
    "\xEF\xBB\xBF",
    "\xE2\x80\xA8", "\xC2\xAD", "ŉ", "ſ", "Ǆ", "㍿", "㈱", "ℌ", "ℵ", "𝐀𝐁𝐂", "𝔘𝔫𝔦", "ｰ", "ﹰ",
    "ﺍﻟﻌﺮﺑﻴﺔ", "Å", "Ω", "‼", "⁉", "′", "″", "‐", "—", "“quotes”", "‘x’", "«»", "¨", "´",
};
/* Whitespace and control characters other than newline and NUL. */
static const char *const kSpace[] = {
    "\t", "  ", "   ", "\t\t", " \t ", "\r", "\x0B", "\x0C", "\x01", "\x1F", "\x7F",
    "\xC2\x85", "\xC2\x9F", "     ",
};

/* One random valid scalar value outside ASCII (no surrogates), most in the BMP. */
static uint32_t rnd_cp(uint64_t *s) {
  for (;;) {
    uint32_t c;
    switch (rnd_below(s, 4)) {
    case 0: c = 0x80 + (uint32_t)rnd_below(s, 0x800 - 0x80); break;
    case 1: c = 0x800 + (uint32_t)rnd_below(s, 0x10000 - 0x800); break;
    case 2: c = 0x4E00 + (uint32_t)rnd_below(s, 0x9FFF - 0x4E00); break;
    default: c = 0x10000 + (uint32_t)rnd_below(s, 0x110000 - 0x10000); break;
    }
    if (c < 0xD800 || c > 0xDFFF) return c;
  }
}

static void add_item(sbuf *b, uint64_t *s) {
  size_t r = rnd_below(s, 100);
  if (r < 50) {
    const char *w = PICK(s, kEnglish);
    size_t form = rnd_below(s, 30);
    if (form == 0) { /* UPPER */
      for (const char *p = w; *p; p++) {
        char c = (*p >= 'a' && *p <= 'z') ? (char)(*p - 32) : *p;
        sb_put(b, &c, 1);
      }
    } else if (form < 4 && w[0] >= 'a' && w[0] <= 'z') { /* Capitalised */
      char c = (char)(w[0] - 32);
      sb_put(b, &c, 1);
      sb_puts(b, w + 1);
    } else {
      sb_puts(b, w);
    }
  } else if (r < 58) {
    sb_puts(b, PICK(s, kAccented));
  } else if (r < 63) {
    sb_puts(b, PICK(s, kGreek));
  } else if (r < 68) {
    sb_puts(b, PICK(s, kCyrillic));
  } else if (r < 74) {
    sb_puts(b, PICK(s, kCJK));
  } else if (r < 77) {
    sb_puts(b, PICK(s, kEmoji));
  } else if (r < 80) {
    sb_puts(b, PICK(s, kCombining));
  } else if (r < 87) {
    sb_puts(b, PICK(s, kNfkc));
  } else if (r < 91) {
    char num[32];
    snprintf(num, sizeof num, "%llu", (unsigned long long)(rnd(s) % 100000000ull));
    sb_puts(b, num + rnd_below(s, 3) * (strlen(num) > 3));
  } else if (r < 95) {
    for (size_t k = 1 + rnd_below(s, 3); k > 0; k--) sb_cp(b, rnd_cp(s));
  } else {
    sb_puts(b, PICK(s, kSpace));
  }
}

/* At least min_bytes of text, lines ending in '\n', from seed. */
static char *make_corpus(uint64_t seed, size_t min_bytes, size_t *len) {
  sbuf b = {0};
  uint64_t s = seed;
  while (b.len < min_bytes) {
    size_t kind = rnd_below(&s, 100), target;
    if (kind < 6) target = 0; /* empty line */
    else if (kind < 20) target = 1 + rnd_below(&s, 20);
    else if (kind < 99) target = 20 + rnd_below(&s, 300);
    else target = 2000 + rnd_below(&s, 20000);
    if (target && rnd_below(&s, 10) == 0) sb_puts(&b, rnd_below(&s, 2) ? " " : "\t");
    size_t start = b.len;
    while (b.len - start < target) {
      add_item(&b, &s);
      size_t sep = rnd_below(&s, 100);
      if (sep < 75) sb_puts(&b, " ");
      else if (sep < 80) sb_puts(&b, ", ");
      else if (sep < 84) sb_puts(&b, ". ");
      else if (sep < 88) sb_puts(&b, "  ");
      else if (sep < 91) sb_puts(&b, "\t");
      else if (sep < 93) sb_puts(&b, " - ");
      /* else glued to the next item */
    }
    sb_puts(&b, "\n");
  }
  *len = b.len;
  return b.p;
}

#endif

// Tests for model/tokenizer/text_cleaning.h. Expected values are facts about
// Python (html.unescape, str.lower, bytes.decode(errors="replace")), examples
// from ftfy 6's documentation, and OpenCLIP's cleaning of the reference texts
// (shared/reference/texts.json and its BPE pieces).

#include "model/tokenizer/text_cleaning.h"

#include <gtest/gtest.h>

#include <string>

namespace oclip {
namespace {

TEST(TextCleaningTest, ToValidUtf8ReplacesMaximalInvalidSubsequences) {
  EXPECT_EQ(ToValidUtf8("plain ascii"), "plain ascii");
  EXPECT_EQ(ToValidUtf8("caf\xC3\xA9"), "caf\xC3\xA9");
  EXPECT_EQ(ToValidUtf8("a\xFF"
                        "b"),
            "a\uFFFD"
            "b");
  EXPECT_EQ(ToValidUtf8("\xE2\x82"), "\uFFFD");                            // truncated
  EXPECT_EQ(ToValidUtf8("\xED\xA0\x80"), "\uFFFD\uFFFD\uFFFD");            // surrogate
  EXPECT_EQ(ToValidUtf8("\xF0\x9F\x98"), "\uFFFD");                        // truncated 4-byte
  EXPECT_EQ(ToValidUtf8("\xC0\xAF"), "\uFFFD\uFFFD");                      // overlong
  EXPECT_EQ(ToValidUtf8("\xF4\x90\x80\x80"), "\uFFFD\uFFFD\uFFFD\uFFFD");  // > U+10FFFF
  EXPECT_EQ(ToValidUtf8("x\xE0\x80y"), "x\uFFFD\uFFFDy");
  EXPECT_EQ(ToValidUtf8(""), "");
}

TEST(TextCleaningTest, HtmlUnescapeMatchesPython) {
  struct Case {
    const char* in;
    const char* out;
  };
  const Case cases[] = {
      {"&amp;", "&"},
      {"&lt;b&gt;", "<b>"},
      {"&quot;q&quot;", "\"q\""},
      {"&#39;", "'"},
      {"&#x27;", "'"},
      {"&#65", "A"},
      {"&#x41;x", "Ax"},
      {"&AMP;", "&"},
      {"&amp", "&"},
      {"&ampfoo", "&foo"},
      {"&notit;", "\u00ACit;"},
      {"&Eacute", "\u00C9"},
      {"&eacuteabc",
       "\u00E9"
       "abc"},
      {"&#0;", "\uFFFD"},
      {"&#128;", "\u20AC"},
      {"&#x110000;", "\uFFFD"},
      {"&#xD800;", "\uFFFD"},
      {"&#9999999999999999999999;", "\uFFFD"},
      {"&#1;", ""},
      {"&#13;", "\r"},
      {"&unknown;", "&unknown;"},
      {"& amp;", "& amp;"},
      {"&#;", "&#;"},
      {"&#x;", "&#x;"},
      {"no entities", "no entities"},
      {"&", "&"},
  };
  for (const Case& c : cases) EXPECT_EQ(HtmlUnescape(c.in), c.out) << c.in;
}

TEST(TextCleaningTest, PythonLowerIsFullUnicode) {
  EXPECT_EQ(PythonLower("A photo of a DOG"), "a photo of a dog");
  // Final sigma and the two-code-point lower case of U+0130.
  EXPECT_EQ(PythonLower("\u00C0\u00C9\u00CE \u03A3\u0391\u03A3 \u0130"),
            "\u00E0\u00E9\u00EE \u03C3\u03B1\u03C2 i\u0307");
}

TEST(TextCleaningTest, WhitespaceCleanCollapsesUnicodeWhitespace) {
  EXPECT_EQ(WhitespaceClean("  extra   whitespace\tand\nnewlines  "),
            "extra whitespace and newlines");
  EXPECT_EQ(WhitespaceClean("\u3000a\u00A0b\u2028c\u202F d\x0B\x0C"), "a b c d");
  // U+200B ZERO WIDTH SPACE is not White_Space.
  EXPECT_EQ(WhitespaceClean("a\u200Bb"), "a\u200Bb");
  EXPECT_EQ(WhitespaceClean(""), "");
  EXPECT_EQ(WhitespaceClean(" \t\n "), "");
}

TEST(TextCleaningTest, ReferenceTextsCleanAsOpenClip) {
  // The cleaned forms the reference BPE pieces (texts.json) spell out.
  EXPECT_EQ(CleanLower("  extra   whitespace\tand\nnewlines  "), "extra whitespace and newlines");
  EXPECT_EQ(CleanLower("HTML &amp; entities &lt;b&gt;bold&lt;/b&gt; &quot;quoted&quot;"),
            "html & entities <b>bold</b> \"quoted\"");
  EXPECT_EQ(CleanLower("mojibake: caf\u00C3\u00A9 na\u00C3\u00AFve"),
            "mojibake: caf\u00E9 na\u00EFve");
  const std::string correct =
      "na\u00EFve caf\u00E9 r\u00E9sum\u00E9 \u2014 \u00FCmlaut fa\u00E7ade";
  EXPECT_EQ(FixText(correct), correct);
  EXPECT_EQ(CleanLower(correct), correct);
  const std::string emoji = "emoji \U0001F436\U0001F431 and symbols \u00A9\u00AE\u2122 \u00BD";
  EXPECT_EQ(FixText(emoji), emoji);
  const std::string cjk =
      "\u4E2D\u6587 \u6587\u672C \u548C \u65E5\u672C\u8A9E\u306E\u30C6\u30AD\u30B9\u30C8";
  EXPECT_EQ(FixText(cjk), cjk);
  EXPECT_EQ(CleanLower(""), "");
}

// Examples from ftfy 6's documentation (fix_text with default options).
TEST(TextCleaningTest, FixTextDocumentationExamples) {
  EXPECT_EQ(FixText("u\u00CC\u02C6nicode"), "\u00FCnicode");
  EXPECT_EQ(FixText("\u00E2\u0153\u201D No problems"), "\u2714 No problems");
  EXPECT_EQ(FixText("&macr;\\_(\u00E3\u0083\u0084)_/&macr;"), "\u00AF\\_(\u30C4)_/\u00AF");
  EXPECT_EQ(FixText("Broken text&hellip; it&#x2019;s \uFB02ubberi\uFB01c!"),
            "Broken text\u2026 it's flubberific!");
  EXPECT_EQ(FixText("\uFF2C\uFF2F\uFF35\uFF24\u3000\uFF2E\uFF2F\uFF29\uFF33\uFF25\uFF33"),
            "LOUD NOISES");
  EXPECT_EQ(FixText("\uFF35\uFF80\uFF70\uFF9D"), "U\u30BF\u30FC\u30F3");
  EXPECT_EQ(FixText("s\u00C3\u00B3"), "s\u00F3");
  EXPECT_EQ(FixText("sch\u00C3\u00B6n"), "sch\u00F6n");
  EXPECT_EQ(FixText("voil\u00C3 le travail"), "voil\u00E0 le travail");
  EXPECT_EQ(FixText("This \u00E2\u20AC\u201D should be an em dash"),
            "This \u2014 should be an em dash");
  EXPECT_EQ(FixText("HTML entities &lt;3"), "HTML entities <3");
  EXPECT_EQ(FixText("<em>HTML entities &lt;3</em>"), "<em>HTML entities &lt;3</em>");
  EXPECT_EQ(FixText("\uFEFFParty like\nit&rsquo;s 1999!"), "Party like\nit's 1999!");
  EXPECT_EQ(FixText("&ntilde; &Ntilde; &NTILDE; &nTILDE;"), "\u00F1 \u00D1 \u00D1 &nTILDE;");
  EXPECT_EQ(FixText("P&EACUTE;REZ"), "P\u00C9REZ");
  EXPECT_EQ(FixText("BUNDESSTRA&SZLIG;E"), "BUNDESSTRASSE");
  EXPECT_EQ(FixText("\x01\x1B[36;44mI&#x92;m blue, da ba dee da ba doo&#133;\x1B[0m"),
            "I'm blue, da ba dee da ba doo\u2026");
  // Left alone by fix_encoding (then only the quote is uncurled).
  EXPECT_EQ(FixText("not such a fan of Charlotte Bront\u00EB\u2026\u201D"),
            "not such a fan of Charlotte Bront\u00EB\u2026\"");
  EXPECT_EQ(FixText("AH\u00C5\u2122, the new sofa from IKEA\u00AE"),
            "AH\u00C5\u2122, the new sofa from IKEA\u00AE");
  EXPECT_EQ(FixText(""), "");
}

TEST(TextCleaningTest, FixTextCharacterFixes) {
  EXPECT_EQ(FixText("\u2018single\u2019 \u201Cdouble\u201D"), "'single' \"double\"");
  EXPECT_EQ(FixText("\uFB01ne \uFB02ow"), "fine flow");
  EXPECT_EQ(FixText("e\u0301"), "\u00E9");  // NFC
  EXPECT_EQ(FixText(std::string("a\x0B"
                                "b\x00"
                                "c\x7F"
                                "d",
                                7)),
            "abcd");
  EXPECT_EQ(FixText("line\r\nbreaks\rand\u2028more"), "line\nbreaks\nand\nmore");
  EXPECT_EQ(FixText("tab\tstays"), "tab\tstays");
}

TEST(TextCleaningTest, BasicCleanUnescapesTwiceAndStrips) {
  EXPECT_EQ(BasicClean("  &amp;lt;tag&amp;gt;  "), "<tag>");
  // ftfy leaves entities alone next to a literal '<'; html.unescape does not.
  EXPECT_EQ(BasicClean("<em>HTML entities &lt;3</em>"), "<em>HTML entities <3</em>");
}

TEST(TextCleaningTest, InvalidUtf8NeverFails) {
  const std::string bad = "\xFF\xFE valid \xC3 text \xED\xA0\x80 \xF4\x90\x80\x80 end";
  const std::string cleaned = CleanLower(bad);
  EXPECT_EQ(cleaned, ToValidUtf8(cleaned));
  EXPECT_NE(cleaned.find("valid"), std::string::npos);
  EXPECT_NE(cleaned.find("\uFFFD"), std::string::npos);
  EXPECT_EQ(CleanWhitespace(bad), ToValidUtf8(CleanWhitespace(bad)));
  EXPECT_EQ(FixText(std::string("\0\0\0", 3)), "");
}

TEST(TextCleaningTest, VeryLongTextIsCleaned) {
  std::string ascii;
  while (ascii.size() < (10u << 20)) ascii += "Word  ";
  const std::string cleaned = CleanLower(ascii);
  EXPECT_EQ(cleaned.substr(0, 10), "word word ");
  EXPECT_EQ(cleaned.back(), 'd');

  std::string mixed;
  while (mixed.size() < (1u << 20))
    mixed += "Caf\u00C3\u00A9 na\u00EFve &amp; \u201Cquotes\u201D\n";
  const std::string fixed = CleanLower(mixed);
  EXPECT_EQ(fixed, ToValidUtf8(fixed));
  EXPECT_NE(fixed.find(" & \"quotes\" "), std::string::npos);
  EXPECT_EQ(fixed.find('\n'), std::string::npos);
}

}  // namespace
}  // namespace oclip

#!/usr/bin/env python3
"""Generates model/tokenizer/text_cleaning_data.inc (run with Python 3.11).

Usage: gen_text_cleaning_data.py OUTPUT.inc
"""
import html, html.entities, sys
# Builds the ICU pattern equivalent to ftfy 6.3's BADNESS_RE and UTF8_DETECTOR_RE.
import unicodedata as ud
L = ud.lookup
def chars(spec):
    """spec: list of names, (name_from, name_to) ranges, or raw ints/ranges."""
    out = []
    for s in spec:
        if isinstance(s, tuple):
            a, b = [(L(x) if isinstance(x, str) else chr(x)) for x in s]
            out.append((ord(a), ord(b)))
        elif isinstance(s, int):
            out.append((s, s))
        else:
            c = ord(L(s)); out.append((c, c))
    return out
cat = {}
cat['common'] = chars(["NO-BREAK SPACE","SOFT HYPHEN","MIDDLE DOT","ACUTE ACCENT","EN DASH","EM DASH",
  "HORIZONTAL BAR","HORIZONTAL ELLIPSIS","RIGHT SINGLE QUOTATION MARK"])
cat['c1'] = [(0x80, 0x9f)]
cat['bad'] = chars(["BROKEN BAR","CURRENCY SIGN","DIAERESIS","NOT SIGN","MACRON","CEDILLA",
  "LATIN SMALL LETTER F WITH HOOK","MODIFIER LETTER CIRCUMFLEX ACCENT","CARON","BREVE","OGONEK",
  "SMALL TILDE","DAGGER","DOUBLE DAGGER","PER MILLE SIGN","REVERSED NOT SIGN","LOZENGE",0xfffd,
  "FEMININE ORDINAL INDICATOR","MASCULINE ORDINAL INDICATOR"])
cat['law'] = chars(["PILCROW SIGN","SECTION SIGN"])
cat['currency'] = chars(["CENT SIGN","POUND SIGN","YEN SIGN","PESETA SIGN","EURO SIGN"])
cat['start_punctuation'] = chars(["INVERTED EXCLAMATION MARK","LEFT-POINTING DOUBLE ANGLE QUOTATION MARK",
  "INVERTED QUESTION MARK","COPYRIGHT SIGN","GREEK TONOS","GREEK DIALYTIKA TONOS","LEFT SINGLE QUOTATION MARK",
  "SINGLE LOW-9 QUOTATION MARK","LEFT DOUBLE QUOTATION MARK","DOUBLE LOW-9 QUOTATION MARK","BULLET",
  "SINGLE LEFT-POINTING ANGLE QUOTATION MARK",0xf8ff])
cat['end_punctuation'] = chars(["REGISTERED SIGN","RIGHT-POINTING DOUBLE ANGLE QUOTATION MARK",
  "DOUBLE ACUTE ACCENT","RIGHT DOUBLE QUOTATION MARK","SINGLE RIGHT-POINTING ANGLE QUOTATION MARK","TRADE MARK SIGN"])
cat['numeric'] = chars(["SUPERSCRIPT TWO","SUPERSCRIPT THREE","SUPERSCRIPT ONE","PLUS-MINUS SIGN",
  "VULGAR FRACTION ONE QUARTER","VULGAR FRACTION ONE HALF","VULGAR FRACTION THREE QUARTERS","MULTIPLICATION SIGN",
  "MICRO SIGN","DIVISION SIGN","FRACTION SLASH","PARTIAL DIFFERENTIAL","INCREMENT","N-ARY PRODUCT",
  "N-ARY SUMMATION","SQUARE ROOT","INFINITY","INTERSECTION","INTEGRAL","ALMOST EQUAL TO","NOT EQUAL TO",
  "IDENTICAL TO","LESS-THAN OR EQUAL TO","GREATER-THAN OR EQUAL TO","NUMERO SIGN"])
cat['kaomoji'] = [(0xd2,0xd6),(0xd9,0xdc),(0xf2,0xf6),(0xf8,0xfc)] + chars([
  "LATIN CAPITAL LETTER O WITH DOUBLE ACUTE","LATIN CAPITAL LETTER O WITH MACRON","LATIN CAPITAL LETTER U WITH MACRON",
  "LATIN CAPITAL LETTER U WITH OGONEK","DEGREE SIGN"])
up = ["O WITH STROKE","U WITH DIAERESIS","Y WITH ACUTE","A WITH BREVE","A WITH MACRON","A WITH OGONEK",
  "C WITH ACUTE","C WITH CARON","D WITH CARON","D WITH STROKE","E WITH OGONEK","E WITH CARON","E WITH MACRON",
  "E WITH DOT ABOVE","G WITH BREVE","G WITH CEDILLA","I WITH DOT ABOVE","I WITH MACRON","K WITH CEDILLA",
  "L WITH ACUTE","L WITH CARON","L WITH STROKE","L WITH CEDILLA","N WITH ACUTE","N WITH CARON","N WITH CEDILLA"]
up2 = ["R WITH CARON","S WITH ACUTE","S WITH CEDILLA","S WITH CARON","T WITH CEDILLA","T WITH CARON",
  "U WITH RING ABOVE","U WITH DOUBLE ACUTE","Y WITH DIAERESIS","Z WITH ACUTE","Z WITH DOT ABOVE","Z WITH CARON"]
cat['upper_accented'] = [(0xc0,0xd1)] + chars(["LATIN CAPITAL LETTER "+x for x in up] +
  ["LATIN CAPITAL LIGATURE OE"] + ["LATIN CAPITAL LETTER "+x for x in up2] + ["CYRILLIC CAPITAL LETTER GHE WITH UPTURN"])
lo = ["A WITH BREVE","A WITH OGONEK","A WITH MACRON","C WITH ACUTE","C WITH CARON","D WITH CARON","D WITH STROKE",
  "E WITH OGONEK","E WITH CARON","E WITH MACRON","E WITH DOT ABOVE","G WITH BREVE","G WITH CEDILLA","I WITH OGONEK",
  "I WITH MACRON","K WITH CEDILLA","L WITH ACUTE","L WITH CARON","L WITH STROKE","L WITH CEDILLA"]
lo2 = ["R WITH ACUTE","S WITH ACUTE","S WITH CEDILLA","S WITH CARON","T WITH CARON","U WITH DIAERESIS",
  "Z WITH ACUTE","Z WITH DOT ABOVE","Z WITH CARON"]
cat['lower_accented'] = chars(["LATIN SMALL LETTER SHARP S"]) + [(0xe0,0xf1)] + chars(
  ["LATIN SMALL LETTER "+x for x in lo] + ["LATIN SMALL LIGATURE OE"] + ["LATIN SMALL LETTER "+x for x in lo2] +
  ["CYRILLIC SMALL LETTER GHE WITH UPTURN","LATIN SMALL LIGATURE FI","LATIN SMALL LIGATURE FL"])
cat['upper_common'] = chars(["LATIN CAPITAL LETTER THORN",("GREEK CAPITAL LETTER ALPHA","GREEK CAPITAL LETTER OMEGA")] +
  ["GREEK CAPITAL LETTER "+x for x in ["ALPHA WITH TONOS","EPSILON WITH TONOS","ETA WITH TONOS","IOTA WITH TONOS",
   "OMICRON WITH TONOS","UPSILON WITH TONOS","OMEGA WITH TONOS","IOTA WITH DIALYTIKA","UPSILON WITH DIALYTIKA"]] +
  [("CYRILLIC CAPITAL LETTER IO","CYRILLIC CAPITAL LETTER YA")])
cat['lower_common'] = chars([("GREEK SMALL LETTER ALPHA","GREEK SMALL LETTER OMEGA")] +
  ["GREEK SMALL LETTER "+x for x in ["ALPHA WITH TONOS","EPSILON WITH TONOS","ETA WITH TONOS","IOTA WITH TONOS",
   "UPSILON WITH DIALYTIKA AND TONOS"]] + [("CYRILLIC SMALL LETTER A","CYRILLIC SMALL LETTER DZHE")])
cat['box'] = [(ord(c),ord(c)) for c in "│┌┐┘├┤┬┼"] + chars([("BOX DRAWINGS DOUBLE HORIZONTAL",
  "BOX DRAWINGS DOUBLE VERTICAL AND HORIZONTAL")]) + [(ord(c),ord(c)) for c in "▀▄█▌▐░▒▓"]

def cstr(s):
    out = []
    for b in s.encode('utf-8'):
        c = chr(b)
        if 0x20 <= b < 0x7f and c not in '\\"?':
            out.append(c)
        else:
            out.append('\\%03o' % b)
    return '"' + ''.join(out) + '"'
L = []
w = L.append
w('// Data tables for text_cleaning.cc (included there only). Generated from Python 3.11:')
w('// html.entities.html5 (the WHATWG list of HTML5 named character references), the codecs')
w('// module (single-byte code pages) and unicodedata (the character classes of ftfy 6.3\'s')
w('// mojibake heuristics, written as ICU regex set bodies).')
w('')
w('struct HtmlEntity {')
w('  const char* name;')
w('  const char* value;')
w('};')
w('')
w('// Names as html.entities.html5 lists them (with the trailing ";" where it has one).')
w('constexpr HtmlEntity kHtml5Entities[] = {')
h5 = html.entities.html5
for name in sorted(h5):
    w('    {%s, %s},' % (cstr(name), cstr(h5[name])))
w('};')
w('')
w('// All-caps names ftfy also decodes ("EACUTE;" -> "\\u00c9"): every all-lower-case name ending')
w('// in ";" whose upper-case form html.unescape leaves unchanged, mapped to the upper-cased value.')
w('constexpr HtmlEntity kUpperCaseEntities[] = {')
for name in sorted(h5):
    if name.endswith(';') and name == name.lower():
        up = '&' + name.upper()
        if html.unescape(up) == up:
            w('    {%s, %s},' % (cstr(name.upper()), cstr(h5[name].upper())))
w('};')
w('')
# Code pages.
encs = [('latin-1','latin-1',False),('sloppy-windows-1252','cp1252',True),('sloppy-windows-1251','cp1251',True),
        ('sloppy-windows-1250','cp1250',True),('sloppy-windows-1253','cp1253',True),
        ('sloppy-windows-1254','cp1254',True),('sloppy-windows-1257','cp1257',True),
        ('iso-8859-2','iso-8859-2',False),('macroman','mac_roman',False),('cp437','cp437',False)]
w('struct CodePage {')
w('  const char* name;')
w('  bool sloppy;  // undefined bytes decode as Latin-1; byte 1A <-> U+FFFD')
w('  char16_t byte_1a;')
w('  char16_t high[128];  // bytes 0x80-0xFF')
w('};')
w('')
w('// In the order ftfy tries them (chardata.CHARMAP_ENCODINGS). Bytes 00-7F other than 1A are')
w('// ASCII in all of them.')
w('constexpr CodePage kCodePages[] = {')
for name, codec, sloppy in encs:
    table = []
    for b in range(256):
        try:
            c = bytes([b]).decode(codec)
        except UnicodeDecodeError:
            c = '\ufffd'
        if sloppy and c == '\ufffd':
            c = chr(b)
        table.append(c)
    if sloppy:
        table[0x1a] = '\ufffd'
    for b in range(0x80):
        if b != 0x1a: assert table[b] == chr(b), (name, b)
    w('    {"%s", %s, 0x%04X, {' % (name, 'true' if sloppy else 'false', ord(table[0x1a])))
    hi = table[0x80:]
    for r in range(0, 128, 8):
        w('        ' + ', '.join('0x%04X' % ord(c) for c in hi[r:r+8]) + ',')
    w('    }},')
w('};')
w('')
def body(pairs):
    return ''.join(('\\x{%x}' % a) if a == b else ('\\x{%x}-\\x{%x}' % (a, b)) for a, b in pairs)
w('// ftfy\'s MOJIBAKE_CATEGORIES (badness.py), as ICU set bodies.')
for k in ['common','c1','bad','law','currency','start_punctuation','end_punctuation','numeric','kaomoji',
          'upper_accented','lower_accented','upper_common','lower_common','box']:
    nm = 'k' + ''.join(p.capitalize() for p in k.split('_'))
    w('constexpr char %s[] = R"(%s)";' % (nm, body(cat[k])))
w('')
# UTF-8 clue classes.
cencs = ['latin-1','cp1252','cp1250','cp1251','cp1253','cp1254','cp1257']
def collect(bs):
    s = set()
    for e in cencs:
        for b in bs:
            try: s.add(ord(bytes([b]).decode(e)))
            except UnicodeDecodeError: pass
    return s
def ranges(s):
    s = sorted(s); out = []
    for c in s:
        if out and out[-1][1] == c - 1: out[-1] = (out[-1][0], c)
        else: out.append((c, c))
    return out
f2 = collect(range(0xc2, 0xe0)); f3 = collect(range(0xe0, 0xf0)); f4 = collect([0xf0, 0xf3])
cont = collect(range(0x80, 0xc0)) | {0x20}
strict = cont - {0x20, 0x2013, 0x2014, 0x2015, 0x2018, 0x2019, 0x201a, 0x201c, 0x201d, 0x201e, 0x2022, 0x2026}
w('// ftfy\'s UTF8_CLUES (chardata.py): characters that bytes C2-DF, E0-EF, F0/F3 and 80-BF')
w('// decode to in latin-1 and windows-1250/1251/1252/1253/1254/1257 (continuations also as')
w('// a space, which may stand for A0); "strict" leaves out spaces, dashes, quotes, bullets and')
w('// ellipses.')
for nm, s in [('kUtf8FirstOf2', f2), ('kUtf8FirstOf3', f3), ('kUtf8FirstOf4', f4),
              ('kUtf8Continuation', cont), ('kUtf8ContinuationStrict', strict)]:
    w('constexpr char %s[] = R"(%s)";' % (nm, body(ranges(s))))
open(sys.argv[1] if len(sys.argv) > 1 else 'text_cleaning_data.inc', 'w').write('\n'.join(L) + '\n')

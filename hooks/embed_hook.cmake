# Write OUT: the hook template IN as a C string (tp_hooks_template).
file(READ ${IN} hex HEX)
string(LENGTH "${hex}" n)
math(EXPR n "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," arr "${hex}")
file(WRITE ${OUT} "/* Generated from hooks/pre-push.in by embed_hook.cmake. */\n"
  "#include <stddef.h>\n"
  "const char tp_hooks_template[] = {${arr} 0};\n"
  "const size_t tp_hooks_template_len = ${n};\n")

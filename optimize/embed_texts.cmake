# Write OUT: the default texts in DIR as C arrays (tp_optimize_default_text).
set(body "/* Generated from optimize/data by embed_texts.cmake. */\n#include <stddef.h>\n")
foreach(name calib eval)
  file(READ ${DIR}/${name}.txt hex HEX)
  string(LENGTH "${hex}" n)
  math(EXPR n "${n} / 2")
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," arr "${hex}")
  string(APPEND body "const unsigned char tp_optimize_text_${name}[] = {${arr} 0};\n"
    "const size_t tp_optimize_text_${name}_len = ${n};\n")
endforeach()
file(WRITE ${OUT} "${body}")

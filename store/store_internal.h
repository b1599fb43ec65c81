/* Private to store/: backend constructors. */
#ifndef TP_STORE_INTERNAL_H
#define TP_STORE_INTERNAL_H

#include "tp_store.h"

int tp_store_file_open(tp_store **out, const char *url);

#endif

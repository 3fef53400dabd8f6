/* STUB, being written. */
#include "jobspec.h"

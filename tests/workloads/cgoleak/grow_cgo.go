//go:build cgo

package main

/*
#include <stdlib.h>
#include <string.h>

// leak allocates n bytes with malloc and touches them all.
static void *leak(size_t n) {
	char *p = malloc(n);
	if (p != NULL) {
		memset(p, 1, n);
	}
	return p;
}
*/
import "C"

import "unsafe"

const source = "cgo malloc"

// blocks keeps the pointers (so the C compiler cannot elide the allocation); none is
// ever passed to free.
var blocks []unsafe.Pointer

// grow allocates n bytes with C.malloc and never frees them.
func grow(n int) {
	blocks = append(blocks, C.leak(C.size_t(n)))
}

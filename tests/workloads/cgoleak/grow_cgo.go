//go:build cgo

package main

/*
#include <stdlib.h>
#include <string.h>

// leak allocates n bytes with malloc, touches them all, and drops the pointer.
static void leak(size_t n) {
	char *p = malloc(n);
	if (p != NULL) {
		memset(p, 1, n);
	}
}
*/
import "C"

const source = "cgo malloc"

// grow allocates n bytes with C.malloc and never frees them.
func grow(n int) {
	C.leak(C.size_t(n))
}

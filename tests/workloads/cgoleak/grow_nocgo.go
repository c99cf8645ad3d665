//go:build !cgo

package main

import (
	"log"
	"syscall"
)

const source = "anonymous mmap"

// mappings keeps every mapping reachable; none is ever unmapped.
var mappings [][]byte

// grow maps n bytes of anonymous memory and touches every page so it counts in RSS.
func grow(n int) {
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		log.Printf("mmap: %v", err)
		return
	}
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	mappings = append(mappings, b)
}

// silent accepts TCP connections on -addr and never answers on them, as a process stuck
// in its HTTP handlers would: a collector must not wait on it. It prints "listening on
// ADDR" once listening.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"os"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("listen %s: %v", *addr, err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	os.Stdout.Sync()
	var held []net.Conn
	for {
		conn, err := ln.Accept()
		if err != nil {
			log.Fatalf("accept: %v", err)
		}
		// Kept open and never read: the request waits forever.
		held = append(held, conn)
	}
}

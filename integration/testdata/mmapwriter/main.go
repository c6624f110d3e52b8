// Command mmapwriter writes all the time, as a database does: numbered
// records appended to /log, one write each, and after each record the
// record's number into every page of /mm through a shared writable
// mapping (after the first write to a page, such writes move no time
// stamp of the file). A commit of its container is the state at the
// pause when /log holds records 1..n whole and /mm's pages hold n in a
// first run of pages and n-1 after it.
package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

const pages = 256

func main() {
	log, err := os.OpenFile("/log", os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		panic(err)
	}
	f, err := os.OpenFile("/mm", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		panic(err)
	}
	if err := f.Truncate(pages * 4096); err != nil {
		panic(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, pages*4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		panic(err)
	}
	for i := uint64(1); ; i++ {
		if _, err := fmt.Fprintf(log, "record %d\n", i); err != nil {
			panic(err)
		}
		for p := 0; p < pages; p++ {
			binary.LittleEndian.PutUint64(m[p*4096:], i)
		}
		if i == 1 {
			if err := os.WriteFile("/ready", nil, 0o644); err != nil {
				panic(err)
			}
		}
		time.Sleep(time.Millisecond)
	}
}

package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/pkg/errors"
)

// signalContext is cancelled by the first SIGINT, SIGTERM, SIGHUP or
// SIGQUIT. Later ones do not end the process: it may still have a container
// to resume and a lease to end, and says so. A closed stdout or stderr
// (SIGPIPE) does not end it either.
func signalContext() context.Context {
	ctx, cancel := context.WithCancelCause(context.Background())
	signal.Ignore(syscall.SIGPIPE)
	ch := make(chan os.Signal, 16)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	go func() {
		s := <-ch
		cancel(errors.Errorf("interrupted (%s)", s))
		for s := range ch {
			fmt.Fprintf(os.Stderr, "commit-frontend: %s: still cleaning up (resuming the container, ending the lease); exiting when done\n", s)
		}
	}()
	return ctx
}

// printable escapes what a terminal would act on: control characters other
// than newline and tab, and bytes that are not UTF-8. Names from a
// container reach messages, and a container chooses its names.
func printable(s string) string {
	return escape(s, false)
}

// oneLine is printable with line breaks and tabs escaped too: text that
// must stay on its line (a table cell, a file name in a message).
func oneLine(s string) string {
	return escape(s, true)
}

func escape(s string, oneLine bool) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case (r == '\n' || r == '\t') && !oneLine:
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

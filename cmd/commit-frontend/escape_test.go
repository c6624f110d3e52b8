package main

import "testing"

func TestEscape(t *testing.T) {
	for _, tc := range []struct{ in, printable, oneLine string }{
		{"plain text", "plain text", "plain text"},
		{"two\nlines\ttab", "two\nlines\ttab", `two\nlines\ttab`},
		{"\x1b[2Jcleared", `\x1b[2Jcleared`, `\x1b[2Jcleared`},
		{"bad \xff byte", `bad \xff byte`, `bad \xff byte`},
		{"c1 \u009b csi", `c1 \x9b csi`, `c1 \x9b csi`},
		{"naïve ✓", "naïve ✓", "naïve ✓"},
	} {
		if got := printable(tc.in); got != tc.printable {
			t.Errorf("printable(%q) = %q, want %q", tc.in, got, tc.printable)
		}
		if got := oneLine(tc.in); got != tc.oneLine {
			t.Errorf("oneLine(%q) = %q, want %q", tc.in, got, tc.oneLine)
		}
	}
}

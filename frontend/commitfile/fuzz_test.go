package commitfile

import (
	"errors"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

// FuzzParse checks that no Commitfile makes the parser panic, and that every
// error that names a line names one inside the file.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"FROM scratch\nCOMMIT rootfs\n",
		"# syntax=x\nARG A=1\nFROM ${A} AS s\nCOMMIT --author=\"a b\" --message='m' -- ctx\nRUN <<EOF\necho\nEOF\n",
		"FROM busybox\nENV A=1 \\\n  B=2\nHEALTHCHECK --interval=1s CMD true\nONBUILD RUN x\n",
		"COMMIT\n", "FROM\n", "FROM a\nCOMMIT a b\n", "\\\n", "FROM a\nCOPY --from=x --chown=1:1 a b\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, dt []byte) {
		cf, err := Parse(dt)
		if err != nil {
			var le *parser.LocationError
			if errors.As(err, &le) {
				for _, l := range le.Locations {
					for _, r := range l {
						if r.Start.Line < 0 {
							t.Errorf("error at line %d", r.Start.Line)
						}
					}
				}
			}
			return
		}
		if n := strings.Count(string(cf.Text), "\n"); n != strings.Count(string(dt), "\n") {
			t.Errorf("the converter's text has %d lines, the Commitfile %d", n, strings.Count(string(dt), "\n"))
		}
	})
}

// FuzzParseChanges checks that no --change text makes the parser panic and
// that only docker commit's instructions get through.
func FuzzParseChanges(f *testing.F) {
	for _, s := range []string{"ENV A=1", "CMD [\"a\"]\nEXPOSE 80/udp", "RUN x", "ONBUILD ONBUILD x", "HEALTHCHECK NONE", "LABEL \"a b\"=c", "FROM x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cmds, err := ParseChanges(s)
		if err != nil {
			return
		}
		for _, c := range cmds {
			ok := false
			for _, allowed := range ChangeInstructions {
				if strings.EqualFold(c.Name(), allowed) {
					ok = true
				}
			}
			if !ok {
				t.Errorf("%q let %s through", s, c.Name())
			}
		}
	})
}

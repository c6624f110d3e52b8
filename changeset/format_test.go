package changeset

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckPatterns(t *testing.T) {
	root := t.TempDir()
	for _, name := range []string{"axb", "c\xfed", "sub"} {
		if err := os.WriteFile(filepath.Join(root, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// a\xffb was removed: its pattern a?b also matches axb, which stays.
	err := CheckPatterns(root, []string{"/a\xffb"})
	if err == nil || !strings.Contains(err.Error(), `"/a\xffb"`) || !strings.Contains(err.Error(), `"/axb"`) {
		t.Errorf("ambiguous removal: %v", err)
	}
	// e\xffd matches nothing that stays; c\xfed is a replaced directory
	// that matches only itself; UTF-8 paths are never patterns.
	if err := CheckPatterns(root, []string{"e\xffd", "a?b", "c\xfed"}); err != nil {
		t.Errorf("unambiguous removals refused: %v", err)
	}
	if p, ok := PathPattern("x*\xff"); !ok || p != `x\*?` {
		t.Errorf("PathPattern: %q %v", p, ok)
	}
}

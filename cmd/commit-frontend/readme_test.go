package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// pathLike matches a Go file or a directory named in the table.
var pathLike = regexp.MustCompile(`^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*(\.go|/)$`)

// TestReadmeLayout holds README's Layout table to the tree: every path it
// names exists, every Go file it names is in its row's directory, and every
// package directory of the module is named by a row.
func TestReadmeLayout(t *testing.T) {
	root := filepath.Join("..", "..")
	dt, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(dt), "\n## Layout\n")
	if !ok {
		t.Fatal("README has no Layout section")
	}
	if i := strings.Index(table, "\n## "); i >= 0 {
		table = table[:i]
	}
	code := regexp.MustCompile("`([^`]+)`")
	var dirs []string
	for _, row := range strings.Split(table, "\n") {
		cells := strings.Split(row, "|")
		if len(cells) < 4 || strings.HasPrefix(strings.TrimSpace(cells[1]), "---") || strings.TrimSpace(cells[1]) == "path" {
			continue
		}
		var rowDirs []string
		for _, m := range code.FindAllStringSubmatch(cells[1], -1) {
			p := strings.TrimSuffix(m[1], "/")
			st, err := os.Stat(filepath.Join(root, p))
			if err != nil {
				t.Errorf("Layout names %s, which is not in the tree", m[1])
				continue
			}
			if st.IsDir() {
				rowDirs = append(rowDirs, p)
				dirs = append(dirs, p)
			}
		}
		for _, m := range code.FindAllStringSubmatch(cells[2], -1) {
			name := m[1]
			if !pathLike.MatchString(name) {
				continue
			}
			found := false
			for _, d := range rowDirs {
				if _, err := os.Stat(filepath.Join(root, d, name)); err == nil {
					found = true
				}
			}
			if !found {
				t.Errorf("Layout row %s names %s, which none of its directories holds", strings.TrimSpace(cells[1]), name)
			}
		}
	}
	if err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && p != root || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") {
			return nil
		}
		rel, _ := filepath.Rel(root, filepath.Dir(p))
		for _, dir := range dirs {
			if rel == dir || strings.HasPrefix(rel, dir+"/") {
				return nil
			}
		}
		t.Errorf("the package in %s is in no row of README's Layout", rel)
		return filepath.SkipDir
	}); err != nil {
		t.Fatal(err)
	}
}

// TestReadmeTests holds README and docs/ to the tests they cite: every
// TestName they name is a test function of the module, and every
// guarantee in "What a commit guarantees" names at least one.
func TestReadmeTests(t *testing.T) {
	root := filepath.Join("..", "..")
	defined := map[string]bool{}
	decl := regexp.MustCompile(`(?m)^func ((?:Test|Fuzz)[A-Za-z0-9_]+)\(`)
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "vendor") {
			return filepath.SkipDir
		}
		if !strings.HasSuffix(p, "_test.go") {
			return nil
		}
		dt, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range decl.FindAllStringSubmatch(string(dt), -1) {
			defined[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	cited := regexp.MustCompile(`\b(?:Test|Fuzz)[A-Z][A-Za-z0-9_]*`)
	docs, _ := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	for _, doc := range append([]string{filepath.Join(root, "README.md")}, docs...) {
		dt, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range cited.FindAllString(string(dt), -1) {
			if !defined[name] {
				t.Errorf("%s cites %s, which no test file defines", filepath.Base(doc), name)
			}
		}
	}
	dt, _ := os.ReadFile(filepath.Join(root, "README.md"))
	_, section, ok := strings.Cut(string(dt), "\n## What a commit guarantees")
	if !ok {
		t.Fatal(`README has no "What a commit guarantees" section`)
	}
	section = section[:strings.Index(section, "\n## ")]
	for _, item := range strings.Split(section, "\n- ")[1:] {
		if strings.HasPrefix(item, "Not (yet) guaranteed") {
			continue
		}
		if !cited.MatchString(item) {
			first, _, _ := strings.Cut(item, "\n")
			t.Errorf("the guarantee %q names no test", first)
		}
	}
}

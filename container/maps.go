package container

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/pkg/errors"
)

// WritableMappings are the files that the process pid and its descendants
// map shared and writable, by their paths in the container: a write
// through such a mapping to a page already dirty moves no time stamp of
// the file, so only this tells that the file may have changed.
func WritableMappings(pid int) (map[string]bool, error) {
	out := map[string]bool{}
	if pid <= 0 {
		return out, nil
	}
	seen := map[int]bool{}
	todo := []int{pid}
	for len(todo) > 0 {
		p := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if seen[p] {
			continue
		}
		seen[p] = true
		if err := mappings(p, out); err != nil {
			if p == pid {
				return nil, err
			}
			continue // gone since
		}
		tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(p) + "/task/*/children")
		for _, t := range tasks {
			dt, err := os.ReadFile(t)
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(dt)) {
				if c, err := strconv.Atoi(f); err == nil {
					todo = append(todo, c)
				}
			}
		}
	}
	return out, nil
}

// mappings adds the files process pid maps shared and writable to out.
func mappings(pid int, out map[string]bool) error {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/maps")
	if err != nil {
		return errors.Wrapf(err, "the mappings of process %d", pid)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// address perms offset dev inode pathname
		fields := strings.SplitN(sc.Text(), " ", 6)
		if len(fields) < 6 || len(fields[1]) < 4 || fields[1][1] != 'w' || fields[1][3] != 's' {
			continue
		}
		p := strings.TrimSpace(fields[5])
		p = strings.TrimSuffix(p, " (deleted)")
		if strings.HasPrefix(p, "/") {
			out[p] = true
		}
	}
	return sc.Err()
}

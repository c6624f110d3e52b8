package container

import (
	"bufio"
	"os"
	"strconv"
	"strings"

	"github.com/pkg/errors"
)

// WritableMappings are the files that the processes pids map shared and
// writable, by their paths in the container: a write through such a
// mapping to a page already dirty moves no time stamp of the file, so only
// this tells that the file may have changed. A process gone since is
// skipped.
func WritableMappings(pids []int) (map[string]bool, error) {
	out := map[string]bool{}
	for _, p := range pids {
		if err := mappings(p, out); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
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

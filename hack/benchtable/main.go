// Command benchtable reads `go test -bench BenchmarkCommit` output and prints
// a markdown table that pairs each cell's commit-frontend and
// containerd-native results, with their ratio, and a second table with the
// peers (the in-process engine, nerdctl, podman, the containerd-worker
// path) and a third with docker commit against commit --docker, where the
// run had them.
package main

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

var line = regexp.MustCompile(`^BenchmarkCommit/(rootfs=[^/]+/change=[^/]+/compression=[^/]+/cache=[^/]+)/impl=([a-z-]+?)(-\d+)?\s+(\d+)\s+(.*)$`)

type result map[string]float64

func main() {
	cells := map[string]map[string]result{}
	var order []string
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		m := line.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		cell, impl := m[1], m[2]
		if cells[cell] == nil {
			cells[cell] = map[string]result{}
			order = append(order, cell)
		}
		r := result{}
		f := strings.Fields(m[5])
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err == nil {
				r[f[i+1]] = v
			}
		}
		cells[cell][impl] = r
	}
	sort.SliceStable(order, func(i, j int) bool { return false })
	fmt.Println("| rootfs | change | compression | page cache | commit-frontend s | containerd-native s | speed-up (native / ours) | CPU s ours / native | client peak RSS MiB | sent MiB | buildkitd peak RSS MiB |")
	fmt.Println("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, cell := range order {
		parts := cellParts(cell)
		ours, native := cells[cell]["commit-frontend"], cells[cell]["containerd-native"]
		o, n := ours["ns/op"]/1e9, native["ns/op"]/1e9
		fmt.Printf("| %s | %s | %s | %s | %s | %s | %s | %s / %s | %s | %s | %s |\n",
			parts["rootfs"], parts["change"], parts["compression"], parts["cache"],
			num(o), num(n), ratio(n, o), num(ours["cpu-s/op"]), num(native["cpu-s/op"]),
			num(ours["client-maxrss-MiB"]), num(ours["sent-MiB/op"]), num(ours["buildkitd-peakrss-MiB"]))
	}
	peersTable(cells, order)
	dockerTable(cells, order)
	pauseTable(cells, order)
}

// pauseTable prints how long the container was paused, with the full
// pause and with --pause=brief, where the run had both.
func pauseTable(cells map[string]map[string]result, order []string) {
	header := once("| rootfs | change | compression | page cache | paused ms, --pause=true | paused ms, --pause=brief | commit s, --pause=true | commit s, --pause=brief |")
	for _, cell := range order {
		full, okf := cells[cell]["commit-frontend"]
		brief, okb := cells[cell]["commit-frontend-pause-brief"]
		if !okf || !okb {
			continue
		}
		header()
		parts := cellParts(cell)
		fmt.Printf("| %s | %s | %s | %s | %s | %s | %s | %s |\n",
			parts["rootfs"], parts["change"], parts["compression"], parts["cache"],
			num(full["paused-ms/op"]), num(brief["paused-ms/op"]), num(full["ns/op"]/1e9), num(brief["ns/op"]/1e9))
	}
}

// dockerTable prints, for the cells that had them, docker commit against
// commit-frontend commit --docker on the same dockerd.
func dockerTable(cells map[string]map[string]result, order []string) {
	header := once("| rootfs | change | compression | page cache | docker commit s | commit --docker s | through the engine s | docker / ours | docker / engine | CPU s docker / ours / engine |")
	for _, cell := range order {
		d, okd := cells[cell]["docker-commit"]
		o, oko := cells[cell]["commit-frontend-docker"]
		e, oke := cells[cell]["commit-frontend-docker-engine"]
		if !okd && !oko && !oke {
			continue
		}
		header()
		parts := cellParts(cell)
		dt, ot, et := d["ns/op"]/1e9, o["ns/op"]/1e9, e["ns/op"]/1e9
		fmt.Printf("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s / %s |\n",
			parts["rootfs"], parts["change"], parts["compression"], parts["cache"],
			num(dt), num(ot), num(et), ratio(dt, ot), ratio(dt, et), num(d["cpu-s/op"]), num(o["cpu-s/op"]), num(e["cpu-s/op"]))
	}
}

// peers are the implementations beyond the main pair, in column order.
var peers = []string{"commit-frontend-engine", "commit-frontend-ctrd-worker", "nerdctl", "podman"}

// peersTable prints, for the cells that had a peer, every implementation's
// wall time and how many times faster commit-frontend is than it.
func peersTable(cells map[string]map[string]result, order []string) {
	var rows []string
	for _, cell := range order {
		has := false
		for _, p := range peers {
			_, ok := cells[cell][p]
			has = has || ok
		}
		if has {
			rows = append(rows, cell)
		}
	}
	if len(rows) == 0 {
		return
	}
	fmt.Println()
	fmt.Println("| rootfs | change | compression | page cache | commit-frontend s | in-process engine s | containerd worker s | containerd-native s | nerdctl s | podman s | native / engine | nerdctl / engine | podman / commit-frontend | podman / engine |")
	fmt.Println("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, cell := range rows {
		parts := cellParts(cell)
		t := func(impl string) float64 { return cells[cell][impl]["ns/op"] / 1e9 }
		o, e, w, n, nc, p := t("commit-frontend"), t("commit-frontend-engine"), t("commit-frontend-ctrd-worker"), t("containerd-native"), t("nerdctl"), t("podman")
		fmt.Printf("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			parts["rootfs"], parts["change"], parts["compression"], parts["cache"],
			num(o), num(e), num(w), num(n), num(nc), num(p), ratio(n, e), ratio(nc, e), ratio(p, o), ratio(p, e))
	}
}

// cellParts splits "rootfs=X/change=Y/..." into its keys and values.
func cellParts(cell string) map[string]string {
	parts := map[string]string{}
	for _, kv := range strings.Split(cell, "/") {
		k, v, _ := strings.Cut(kv, "=")
		parts[k] = v
	}
	return parts
}

// ratio is how many times faster ours is than theirs, or "-".
func ratio(theirs, ours float64) string {
	if theirs <= 0 || ours <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f×", theirs/ours)
}

func num(v float64) string {
	if v == 0 {
		return "-"
	}
	if v < 10 {
		return fmt.Sprintf("%.3g", v)
	}
	return fmt.Sprintf("%.0f", v)
}

// once returns a function that prints a blank line, the table header
// and its alignment row the first time it is called, and nothing after.
func once(header string) func() {
	done := false
	return func() {
		if done {
			return
		}
		done = true
		fmt.Println()
		fmt.Println(header)
		fmt.Println("| --- | --- | --- | --- |" + strings.Repeat(" ---: |", strings.Count(header, "|")-5))
	}
}

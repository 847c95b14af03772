// Command syncprobe measures what a durable commit costs on a disk: it
// writes a block and syncs it, at a fixed rate, and prints the latency
// percentiles, for fsync(2) and for fdatasync(2). A WAL commit of the
// SQLite ledger is such a write and sync, so this is the floor of
// ciwebhook's latency on that disk (docs/PERFORMANCE.md).
//
//	go run ./bench/syncprobe -dir data    # on the disk the ledger uses
//
// By default the file is written over in place, as a WAL that starts over
// is; -append grows it instead, as a WAL that is never restarted does.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"
)

func main() {
	var (
		dir    = flag.String("dir", os.TempDir(), "folder on the disk to measure")
		size   = flag.Int("size", 36<<10, "bytes per write (a one-row commit of the ledger is about 36-50 KB)")
		rate   = flag.Float64("rate", 500, "syncs per second")
		n      = flag.Int("n", 2500, "syncs per mode")
		rounds = flag.Int("rounds", 1, "times to measure each mode, alternately")
		grow   = flag.Bool("append", false, "append to the file instead of writing over it in place")
	)
	flag.Parse()
	path := filepath.Join(*dir, fmt.Sprintf("syncprobe-%d.tmp", os.Getpid()))
	defer os.Remove(path)
	for range *rounds {
		for _, data := range []bool{false, true} {
			lat, err := probe(path, *size, *rate, *n, *grow, data)
			if err != nil {
				fmt.Fprintln(os.Stderr, "syncprobe:", err)
				os.Exit(1)
			}
			name := "fsync"
			if data {
				name = "fdatasync"
			}
			slices.Sort(lat)
			at := func(p float64) time.Duration { return lat[int(p/100*float64(len(lat)-1))] }
			fmt.Printf("%-9s size=%d rate=%g append=%v  p50=%v p99=%v p99.9=%v max=%v\n", name, *size, *rate, *grow,
				at(50).Round(time.Microsecond), at(99).Round(time.Microsecond), at(99.9).Round(time.Microsecond), at(100).Round(time.Microsecond))
		}
	}
}

func probe(path string, size int, rate float64, n int, grow, data bool) ([]time.Duration, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	const span = 8 << 20 // the in-place area, about a WAL of 2000 pages
	if !grow {
		if _, err := f.Write(make([]byte, span)); err != nil {
			return nil, err
		}
		if err := f.Sync(); err != nil {
			return nil, err
		}
	}
	buf := make([]byte, size)
	interval := time.Duration(float64(time.Second) / rate)
	lat := make([]time.Duration, 0, n)
	next, off := time.Now(), int64(0)
	for range n {
		next = next.Add(interval)
		time.Sleep(time.Until(next))
		start := time.Now()
		if _, err := f.WriteAt(buf, off); err != nil {
			return nil, err
		}
		if off += int64(size); !grow && off+int64(size) > span {
			off = 0
		}
		if data {
			err = fdatasync(f)
		} else {
			err = f.Sync()
		}
		if err != nil {
			return nil, err
		}
		lat = append(lat, time.Since(start))
	}
	return lat, nil
}

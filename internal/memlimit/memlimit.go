// Package memlimit sets the Go runtime's soft memory limit from the
// container's memory limit, so that the garbage collector works harder
// before the kernel would kill the process, without a limit to keep in
// step by hand.
package memlimit

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// Fraction of the container's limit the Go runtime may use: the rest is
// for what Go does not count (the binary, thread stacks, cgo).
const Fraction = 0.9

// cgroup files that hold a memory limit: cgroup v2, then v1.
var limitFiles = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// Apply sets the soft memory limit to Fraction of the cgroup's limit,
// unless GOMEMLIMIT is set (the user's word wins) or there is no limit. It
// returns the limit it set, or 0.
func Apply() (int64, error) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return 0, nil
	}
	limit, err := Read(limitFiles)
	if err != nil || limit == 0 {
		return 0, err
	}
	soft := int64(float64(limit) * Fraction)
	debug.SetMemoryLimit(soft)
	return soft, nil
}

// Read returns the first memory limit found in files, 0 when there is
// none ("max", a missing file, or v1's "unlimited" huge number).
func Read(files []string) (int64, error) {
	for _, f := range files {
		b, err := os.ReadFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("reading the memory limit: %w", err)
		}
		s := strings.TrimSpace(string(b))
		if s == "max" {
			return 0, nil
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("reading the memory limit in %s: %w", f, err)
		}
		if n <= 0 || n >= 1<<62 { // cgroup v1 says "no limit" with a huge number
			return 0, nil
		}
		return n, nil
	}
	return 0, nil
}

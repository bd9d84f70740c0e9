package memlimit

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	v2, unlimited, v1huge, junk := write("v2", "1073741824\n"), write("max", "max\n"), write("v1", "9223372036854771712\n"), write("junk", "lots")
	missing := filepath.Join(dir, "missing")
	for _, c := range []struct {
		files []string
		want  int64
		err   bool
	}{
		{[]string{missing, v2}, 1 << 30, false},
		{[]string{unlimited, v2}, 0, false},
		{[]string{v1huge}, 0, false},
		{[]string{missing}, 0, false},
		{[]string{junk}, 0, true},
	} {
		got, err := Read(c.files)
		if got != c.want || (err != nil) != c.err {
			t.Errorf("Read(%v) = %d, %v; want %d (error %v)", c.files, got, err, c.want, c.err)
		}
	}
}

func TestApplyLeavesGOMEMLIMITAlone(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "123MiB")
	before := debug.SetMemoryLimit(-1)
	if got, err := Apply(); got != 0 || err != nil {
		t.Errorf("Apply with GOMEMLIMIT set: %d, %v", got, err)
	}
	if debug.SetMemoryLimit(-1) != before {
		t.Error("Apply changed the limit although GOMEMLIMIT is set")
	}
}

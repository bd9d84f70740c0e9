package test

import (
	"bufio"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weftmesh/weft/internal/testenv"
)

// TestImageBuildStage runs the Dockerfile's build stage without a container
// engine (there is none here): the files `docker build` would send, after
// .dockerignore, copied to an empty directory without git, and the stage's
// command, `make build VERSION=...`, run there. The binary must build from
// that context alone, be static (no ELF interpreter, so it runs on the
// distroless static base), and print the stamped version.
func TestImageBuildStage(t *testing.T) {
	root, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	ignore := dockerignore(t, filepath.Join(root, ".dockerignore"))
	out, err := exec.Command("git", "-C", root, "ls-files", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.TempDir()
	copied := 0
	for _, f := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if ignored(ignore, f) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(root, f))
		if os.IsNotExist(err) {
			continue // deleted in the work tree
		}
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(ctx, f)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Fatal(err)
		}
		copied++
	}
	for _, gone := range []string{".git", "bin", "docs", "charts"} {
		if _, err := os.Stat(filepath.Join(ctx, gone)); err == nil {
			t.Errorf("%s reaches the build context", gone)
		}
	}
	cmd := exec.Command("make", "build", "VERSION=v9.9.9-image")
	cmd.Dir = ctx
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOFLAGS=-mod=readonly")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the build stage fails on the build context (%d files): %v\n%s", copied, err, out)
	}
	bin := filepath.Join(ctx, "bin", "weft")
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary is dynamically linked: it would not run on distroless/static")
		}
	}
	v, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil || !strings.Contains(string(v), "v9.9.9-image") {
		t.Errorf("weft version: %q (%v), want the stamped v9.9.9-image", v, err)
	}
}

// dockerignore reads the patterns of a .dockerignore.
func dockerignore(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "!") {
			t.Fatalf(".dockerignore: exceptions (%s) are not handled by this test", line)
		}
		out = append(out, line)
	}
	return out
}

// ignored applies .dockerignore patterns to a path (Go's filepath.Match per
// element, "**/" for any depth, a directory pattern covering what is in it).
func ignored(patterns []string, path string) bool {
	for _, p := range patterns {
		if rest, ok := strings.CutPrefix(p, "**/"); ok {
			parts := strings.Split(path, "/")
			for i := range parts {
				if m, _ := filepath.Match(rest, parts[i]); m {
					return true
				}
			}
			continue
		}
		parts := strings.Split(path, "/")
		pp := strings.Split(p, "/")
		if len(pp) > len(parts) {
			continue
		}
		match := true
		for i := range pp {
			if m, _ := filepath.Match(pp[i], parts[i]); !m {
				match = false
				break
			}
		}
		if match {
			return true
		}
	}
	return false
}

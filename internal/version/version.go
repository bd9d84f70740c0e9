// Package version holds weft's version, stamped at build time with
// -ldflags "-X github.com/weftmesh/weft/internal/version.version=v0.1.0".
package version

import "runtime/debug"

// version is set by the linker; "dev" otherwise.
var version = "dev"

// String returns the version, with the VCS revision when the binary was
// built from a checkout and not stamped.
func String() string {
	if version != "dev" {
		return version
	}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return "dev-" + s.Value[:12]
			}
		}
	}
	return version
}

package walk

import (
	"strings"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
)

// This file models what Envoy's HTTP connection manager does to a request
// path before any filter sees it, as its configuration asks: refuse a
// path with an escaped slash or backslash (path_with_escaped_slashes_action
// REJECT_REQUEST: 400), normalize it (normalize_path: percent-decode the
// unreserved characters, turn backslashes into slashes, resolve "." and
// ".." segments as RFC 3986 section 5.2.4 does) and merge repeated slashes
// (merge_slashes). The result is what the RBAC filter judges and what the
// application receives. The query is not part of the path the RBAC
// url_path matcher compares.

// normalizedPath returns the path an HTTP connection manager passes on, or
// refused saying why it answers 400 instead.
func normalizedPath(m *hcmv3.HttpConnectionManager, raw string) (path, query, refused string) {
	path, query, _ = strings.Cut(raw, "?")
	if m.GetPathWithEscapedSlashesAction() == hcmv3.HttpConnectionManager_REJECT_REQUEST {
		lower := strings.ToLower(path)
		if strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c") {
			return "", "", "the path has an escaped slash or backslash (path_with_escaped_slashes_action: REJECT_REQUEST, 400)"
		}
	}
	if m.GetNormalizePath().GetValue() {
		path = removeDotSegments(strings.ReplaceAll(decodeUnreserved(path), `\`, "/"))
	}
	if m.GetMergeSlashes() {
		for strings.Contains(path, "//") {
			path = strings.ReplaceAll(path, "//", "/")
		}
	}
	return path, query, ""
}

// decodeUnreserved decodes the percent-encodings of unreserved characters
// (letters, digits, "-", ".", "_", "~") and upper-cases the rest.
func decodeUnreserved(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] != '%' || i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
			b.WriteByte(p[i])
			continue
		}
		c := unhex(p[i+1])<<4 | unhex(p[i+2])
		if isUnreserved(c) {
			b.WriteByte(c)
		} else {
			b.WriteString(strings.ToUpper(p[i : i+3]))
		}
		i += 2
	}
	return b.String()
}

// removeDotSegments is RFC 3986's remove_dot_segments.
func removeDotSegments(in string) string {
	var out []string // output segments, each with its leading "/"
	for in != "" {
		switch {
		case strings.HasPrefix(in, "../"):
			in = in[3:]
		case strings.HasPrefix(in, "./"):
			in = in[2:]
		case strings.HasPrefix(in, "/./"):
			in = in[2:]
		case in == "/.":
			in = "/"
		case strings.HasPrefix(in, "/../"):
			in = in[3:]
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		case in == "/..":
			in = "/"
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		case in == "." || in == "..":
			in = ""
		default:
			// The first segment, with its leading "/" if any.
			end := strings.IndexByte(in[1:], '/')
			if end < 0 {
				out, in = append(out, in), ""
			} else {
				out, in = append(out, in[:end+1]), in[end+1:]
			}
		}
	}
	return strings.Join(out, "")
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

package translate

// This file checks a text access-log format as Envoy parses it (its
// substitution format strings), so that a format every sidecar would
// refuse, NACKing its listeners, is refused when the controller starts
// instead of being sent.

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"
)

// commandSyntax is what a command operator of Envoy's format strings
// takes: nothing (commandOnly), parameters in parentheses (required or
// optional), and a maximum length after a colon.
type commandSyntax uint8

const (
	commandOnly    commandSyntax = 0
	paramsRequired commandSyntax = 1 << iota
	paramsOptional
	lengthAllowed
)

// envoyCommands are the command operators Envoy knows without extensions
// configured, with their syntax, as its formatter tables define them
// (source/common/formatter/stream_info_formatter.cc and
// http_specific_formatter.cc). A sidecar older than that list may lack
// the newest of them.
var envoyCommands = map[string]commandSyntax{
	// commandOnly.
	"ACCESS_LOG_TYPE": commandOnly, "BYTES_RECEIVED": commandOnly, "BYTES_RETRANSMITTED": commandOnly, "BYTES_SENT": commandOnly,
	"CONNECTION_ID": commandOnly, "CONNECTION_TERMINATION_DETAILS": commandOnly, "CUSTOM_FLAGS": commandOnly,
	"DOWNSTREAM_DECOMPRESSED_HEADER_BYTES_RECEIVED": commandOnly, "DOWNSTREAM_DECOMPRESSED_HEADER_BYTES_SENT": commandOnly,
	"DOWNSTREAM_DIRECT_LOCAL_ADDRESS": commandOnly, "DOWNSTREAM_DIRECT_LOCAL_ADDRESS_WITHOUT_PORT": commandOnly,
	"DOWNSTREAM_DIRECT_LOCAL_PORT": commandOnly, "DOWNSTREAM_DIRECT_REMOTE_ADDRESS": commandOnly,
	"DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT": commandOnly, "DOWNSTREAM_DIRECT_REMOTE_PORT": commandOnly,
	"DOWNSTREAM_HANDSHAKE_DURATION": commandOnly, "DOWNSTREAM_HEADER_BYTES_RECEIVED": commandOnly,
	"DOWNSTREAM_HEADER_BYTES_SENT": commandOnly, "DOWNSTREAM_LOCAL_ADDRESS": commandOnly,
	"DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT": commandOnly, "DOWNSTREAM_LOCAL_DNS_SAN": commandOnly, "DOWNSTREAM_LOCAL_EMAIL_SAN": commandOnly,
	"DOWNSTREAM_LOCAL_IP_SAN": commandOnly, "DOWNSTREAM_LOCAL_OTHERNAME_SAN": commandOnly, "DOWNSTREAM_LOCAL_PORT": commandOnly,
	"DOWNSTREAM_LOCAL_SUBJECT": commandOnly, "DOWNSTREAM_LOCAL_URI_SAN": commandOnly, "DOWNSTREAM_PEER_CERT": commandOnly,
	"DOWNSTREAM_PEER_CHAIN_FINGERPRINTS_1": commandOnly, "DOWNSTREAM_PEER_CHAIN_FINGERPRINTS_256": commandOnly,
	"DOWNSTREAM_PEER_CHAIN_SERIALS": commandOnly, "DOWNSTREAM_PEER_DNS_SAN": commandOnly, "DOWNSTREAM_PEER_EMAIL_SAN": commandOnly,
	"DOWNSTREAM_PEER_FINGERPRINT_1": commandOnly, "DOWNSTREAM_PEER_FINGERPRINT_256": commandOnly, "DOWNSTREAM_PEER_IP_SAN": commandOnly,
	"DOWNSTREAM_PEER_ISSUER": commandOnly, "DOWNSTREAM_PEER_OTHERNAME_SAN": commandOnly, "DOWNSTREAM_PEER_SERIAL": commandOnly,
	"DOWNSTREAM_PEER_SUBJECT": commandOnly, "DOWNSTREAM_PEER_URI_SAN": commandOnly, "DOWNSTREAM_REMOTE_ADDRESS": commandOnly,
	"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": commandOnly, "DOWNSTREAM_REMOTE_PORT": commandOnly, "DOWNSTREAM_TLS_CIPHER": commandOnly,
	"DOWNSTREAM_TLS_SESSION_ID": commandOnly, "DOWNSTREAM_TLS_VERSION": commandOnly, "DOWNSTREAM_TRANSPORT_FAILURE_REASON": commandOnly,
	"DOWNSTREAM_WIRE_BYTES_RECEIVED": commandOnly, "DOWNSTREAM_WIRE_BYTES_SENT": commandOnly, "DURATION": commandOnly,
	"FILTER_CHAIN_NAME": commandOnly, "GRPC_STATUS_NUMBER": commandOnly, "HOSTNAME": commandOnly, "LOCAL_REPLY_BODY": commandOnly,
	"PACKETS_RETRANSMITTED": commandOnly, "PROTOCOL": commandOnly, "REQUESTED_SERVER_NAME": commandOnly, "REQUEST_DURATION": commandOnly,
	"REQUEST_HEADERS_BYTES": commandOnly, "REQUEST_TX_DURATION": commandOnly, "RESPONSE_CODE": commandOnly, "RESPONSE_DURATION": commandOnly,
	"RESPONSE_FLAGS": commandOnly, "RESPONSE_FLAGS_LONG": commandOnly, "RESPONSE_HEADERS_BYTES": commandOnly,
	"RESPONSE_TRAILERS_BYTES": commandOnly, "RESPONSE_TX_DURATION": commandOnly, "ROUNDTRIP_DURATION": commandOnly, "ROUTE_NAME": commandOnly,
	"STREAM_ID": commandOnly, "TLS_JA3_FINGERPRINT": commandOnly, "TLS_JA4_FINGERPRINT": commandOnly, "TRACE_ID": commandOnly,
	"UNIQUE_ID": commandOnly, "UPSTREAM_CLUSTER": commandOnly, "UPSTREAM_CLUSTER_RAW": commandOnly, "UPSTREAM_CONNECTION_ID": commandOnly,
	"UPSTREAM_CONNECTION_POOL_READY_DURATION": commandOnly, "UPSTREAM_DECOMPRESSED_HEADER_BYTES_RECEIVED": commandOnly,
	"UPSTREAM_DECOMPRESSED_HEADER_BYTES_SENT": commandOnly, "UPSTREAM_HEADER_BYTES_RECEIVED": commandOnly,
	"UPSTREAM_HEADER_BYTES_SENT": commandOnly, "UPSTREAM_HOST": commandOnly, "UPSTREAM_HOST_NAME": commandOnly,
	"UPSTREAM_HOST_NAME_WITHOUT_PORT": commandOnly, "UPSTREAM_LOCAL_ADDRESS": commandOnly, "UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT": commandOnly,
	"UPSTREAM_LOCAL_DNS_SAN": commandOnly, "UPSTREAM_LOCAL_IP_SAN": commandOnly, "UPSTREAM_LOCAL_PORT": commandOnly,
	"UPSTREAM_LOCAL_URI_SAN": commandOnly, "UPSTREAM_PEER_CERT": commandOnly, "UPSTREAM_PEER_DNS_SAN": commandOnly,
	"UPSTREAM_PEER_IP_SAN": commandOnly, "UPSTREAM_PEER_ISSUER": commandOnly, "UPSTREAM_PEER_SUBJECT": commandOnly,
	"UPSTREAM_PEER_URI_SAN": commandOnly, "UPSTREAM_PROTOCOL": commandOnly, "UPSTREAM_REMOTE_ADDRESS": commandOnly,
	"UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": commandOnly, "UPSTREAM_REMOTE_PORT": commandOnly, "UPSTREAM_REQUEST_ATTEMPT_COUNT": commandOnly,
	"UPSTREAM_TLS_CIPHER": commandOnly, "UPSTREAM_TLS_SESSION_ID": commandOnly, "UPSTREAM_TLS_VERSION": commandOnly,
	"UPSTREAM_TRANSPORT_FAILURE_REASON": commandOnly, "UPSTREAM_WIRE_BYTES_RECEIVED": commandOnly, "UPSTREAM_WIRE_BYTES_SENT": commandOnly,
	"VIRTUAL_CLUSTER_NAME": commandOnly,
	// paramsOptional.
	"DOWNSTREAM_PEER_CERT_V_END": paramsOptional, "DOWNSTREAM_PEER_CERT_V_START": paramsOptional, "EMIT_TIME": paramsOptional,
	"EMIT_TIME_LOCAL": paramsOptional, "GRPC_STATUS": paramsOptional, "RESPONSE_CODE_DETAILS": paramsOptional, "START_TIME": paramsOptional,
	"START_TIME_LOCAL": paramsOptional, "UPSTREAM_PEER_CERT_V_END": paramsOptional, "UPSTREAM_PEER_CERT_V_START": paramsOptional,
	// paramsOptional, lengthAllowed.
	"FILTER_STATE": paramsOptional | lengthAllowed, "PATH": paramsOptional | lengthAllowed,
	"UPSTREAM_FILTER_STATE": paramsOptional | lengthAllowed,
	// paramsRequired.
	"CLUSTER_METADATA": paramsRequired, "COMMON_DURATION": paramsRequired, "DYNAMIC_METADATA": paramsRequired,
	"UPSTREAM_METADATA": paramsRequired,
	// paramsRequired, lengthAllowed.
	"COALESCE": paramsRequired | lengthAllowed, "ENVIRONMENT": paramsRequired | lengthAllowed, "QUERY_PARAM": paramsRequired | lengthAllowed,
	"REQ": paramsRequired | lengthAllowed, "REQUEST_HEADER": paramsRequired | lengthAllowed, "RESP": paramsRequired | lengthAllowed,
	"RESPONSE_HEADER": paramsRequired | lengthAllowed, "RESPONSE_TRAILER": paramsRequired | lengthAllowed,
	"STREAM_INFO_REQ": paramsRequired | lengthAllowed, "TRAILER": paramsRequired | lengthAllowed,
}

// commandToken is Envoy's grammar of one command operator, matched at a
// '%': the name, parameters up to the first ')' that ends the token, and
// a length.
var commandToken = regexp.MustCompile(`^%([A-Z0-9_]+)(?:\((.*?)\))?(?::([0-9]+))?%`)

// CheckAccessLogFormat checks a text access-log format: valid UTF-8 (a
// proto string), and every '%' begins
// "%%" (a literal '%') or a command operator Envoy knows, with the
// parameters and length that command takes. The error names the position
// and what is wrong.
func CheckAccessLogFormat(format string) error {
	if !utf8.ValidString(format) {
		return fmt.Errorf("not valid UTF-8")
	}
	for i := 0; i < len(format); {
		if format[i] != '%' {
			i++
			continue
		}
		if strings.HasPrefix(format[i:], "%%") {
			i += 2
			continue
		}
		m := commandToken.FindStringSubmatchIndex(format[i:])
		if m == nil {
			return fmt.Errorf("position %d: %q does not start a command operator (%%NAME%%, %%NAME(params)%%, %%NAME(params):length%%; a literal %% is written %%%%)",
				i, head(format[i:], 24))
		}
		name := format[i+m[2] : i+m[3]]
		syntax, known := envoyCommands[name]
		if !known {
			return fmt.Errorf("position %d: Envoy has no command operator %s", i, name)
		}
		hasParams := m[4] >= 0 && m[5] > m[4]
		hasLength := m[6] >= 0
		switch {
		case syntax == commandOnly && (hasParams || hasLength):
			return fmt.Errorf("position %d: %s takes no parameters or length", i, name)
		case syntax&paramsRequired != 0 && !hasParams:
			return fmt.Errorf("position %d: %s needs parameters, as in %%%s(...)%%", i, name, name)
		case syntax&lengthAllowed == 0 && hasLength:
			return fmt.Errorf("position %d: %s takes no length", i, name)
		}
		i += m[1]
	}
	return nil
}

func head(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// AccessLogFormatPattern is CheckAccessLogFormat's rule as a regular
// expression for the chart's schema: "json", or text whose every '%'
// begins "%%" or a known command operator with what it takes (the
// schema cannot tell a ')' inside parameters from their end, so it
// refuses one there; the controller does not).
func AccessLogFormatPattern() string {
	classes := map[commandSyntax][]string{}
	for name, syntax := range envoyCommands {
		classes[syntax] = append(classes[syntax], name)
	}
	var alts []string
	for _, syntax := range []commandSyntax{commandOnly, paramsOptional, paramsOptional | lengthAllowed, paramsRequired, paramsRequired | lengthAllowed} {
		names := classes[syntax]
		if len(names) == 0 {
			continue
		}
		slices.Sort(names)
		params := `(\(\))?`
		switch {
		case syntax&paramsRequired != 0:
			params = `\([^)\n]+\)`
		case syntax&paramsOptional != 0:
			params = `(\([^)\n]*\))?`
		}
		length := ""
		if syntax&lengthAllowed != 0 {
			length = `(:[0-9]+)?`
		}
		alts = append(alts, "("+strings.Join(names, "|")+")"+params+length)
	}
	return `^(json|([^%\n]|%%|%(` + strings.Join(alts, "|") + `)%)*)$`
}

package translate

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// Access-log formats as Envoy parses them: what it takes is taken, what it
// refuses is refused with the position and the reason, and the chart's
// schema pattern agrees on every format whose parameters hold no ')'.
func TestCheckAccessLogFormat(t *testing.T) {
	pattern := regexp.MustCompile(AccessLogFormatPattern())
	for _, tc := range []struct {
		format string
		want   string // "" when Envoy takes it, else part of the error
	}{
		{`[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "%UPSTREAM_HOST%"`, ""},
		{`%START_TIME(%Y/%m/%dT%H:%M:%S%z %s)% %REQ(USER-AGENT):40% %DOWNSTREAM_PEER_URI_SAN%`, ""},
		{`100%% of %UPSTREAM_CLUSTER% %GRPC_STATUS(NUMBER)% %PROTOCOL()%`, ""},
		{`plain text, no operators`, ""},
		{`%FOO%`, "no command operator FOO"},
		{`%req(:path)%`, "does not start a command operator"},
		{`%REQ(:PATH)`, "does not start a command operator"},
		{`done in 5%`, "position 9"},
		{`%PROTOCOL(x)%`, "PROTOCOL takes no parameters"},
		{`%RESPONSE_CODE:3%`, "RESPONSE_CODE takes no parameters or length"},
		{`%REQ%`, "REQ needs parameters"},
		{`%START_TIME:5%`, "START_TIME takes no length"},
		{`%DYNAMIC_METADATA(a:b):5%`, "takes no length"},
	} {
		err := CheckAccessLogFormat(tc.format)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.format, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: got %v, want an error with %q", tc.format, err, tc.want)
		}
		if got := pattern.MatchString(tc.format); got != (tc.want == "") && !strings.Contains(tc.format, "(%Y/") {
			t.Errorf("%s: the schema pattern matches: %v, the check accepts: %v", tc.format, got, tc.want == "")
		}
	}
	if !pattern.MatchString("json") || !pattern.MatchString("") {
		t.Error("the schema pattern refuses json or the empty format")
	}
	// Every known operator, in the least form it takes, passes both.
	for name, syntax := range envoyCommands {
		f := "%" + name + "%"
		if syntax&paramsRequired != 0 {
			f = "%" + name + "(x)%"
		}
		if err := CheckAccessLogFormat(f); err != nil || !pattern.MatchString(f) {
			t.Errorf("%s: check %v, pattern %v", f, err, pattern.MatchString(f))
		}
	}
}

// The controller refuses, naming the flag, an access-log format, a
// collector address or a sampling value that sidecars would refuse.
func TestObservabilityValidate(t *testing.T) {
	for _, tc := range []struct {
		o    Observability
		want string
	}{
		{Observability{AccessLogFormat: "json"}, ""},
		{Observability{AccessLogFormat: "%REQ(:PATH)% %RESPONSE_CODE%", TracingEndpoint: "otel.observability:4317", TracingSampling: 10}, ""},
		{Observability{AccessLogFormat: "%RESPONSE_CODES%"}, "--access-log-format"},
		{Observability{AccessLogFormat: "%REQ(:PATH)%\n"}, "--access-log-format: one line"},
		{Observability{TracingEndpoint: "otel"}, "--tracing-endpoint"},
		{Observability{TracingEndpoint: "otel:0"}, "--tracing-endpoint"},
		{Observability{TracingSampling: 101}, "--tracing-sampling"},
	} {
		err := tc.o.Validate()
		if got := fmt.Sprint(err); (tc.want == "") != (err == nil) || !strings.Contains(got, tc.want) {
			t.Errorf("%+v: got %v, want %q", tc.o, err, tc.want)
		}
	}
}

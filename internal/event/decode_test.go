package event

import (
	stdjson "encoding/json"
	"reflect"
	"strings"
	"testing"

	json "github.com/go-json-experiment/json"
)

// sameAsEncodingJSON checks decode's fast path against encoding/json, for
// every payload struct: whatever the one-pass decoder accepts, encoding/json
// accepts too, and reads into the same values. (What the fast path refuses
// is decoded by encoding/json itself, so it needs no check.)
func sameAsEncodingJSON(t *testing.T, body []byte) {
	t.Helper()
	check(t, body, new(envelope))
	check(t, body, new(workflowRunPayload))
	check(t, body, new(workflowJobPayload))
	check(t, body, new(checkSuitePayload))
	check(t, body, new(checkRunPayload))
	check(t, body, new(pullRequestPayload))
	check(t, body, new(statusPayload))
}

func check[T any](t *testing.T, body []byte, fast *T) {
	t.Helper()
	if json.Unmarshal(body, fast, decodeOptions) != nil {
		return
	}
	var std T
	if err := stdjson.Unmarshal(body, &std); err != nil {
		t.Fatalf("%T: the one-pass decoder accepts what encoding/json refuses (%v): %q", fast, err, body)
	}
	if !reflect.DeepEqual(*fast, std) {
		t.Fatalf("%T: the decoders disagree on %q:\none-pass      %+v\nencoding/json %+v", fast, body, *fast, std)
	}
}

// decodeSeeds are the corners where encoding/json's reading is easy to get
// wrong: names in another case, repeated names, null over a value, invalid
// UTF-8 and lone surrogates, numbers a Go int cannot hold, what follows the
// document.
var decodeSeeds = []string{
	`{"ACTION":"completed","Repository":{"FULL_NAME":"a/b"},"sender":{"LoGiN":"x"}}`,
	`{"full-name":"x","repository":{"fullname":"a/b","full_name":"c/d"}}`,
	`{"action":"a","action":"b"}`,
	`{"action":"a","action":null}`,
	`{"repository":{"full_name":"a/b"},"repository":{"html_url":"u"}}`,
	`{"repository":{"full_name":"a/b"},"repository":null}`,
	"{\"action\":\"\xff\xfe\xc3\"}",
	"{\"sender\":{\"\xfflogin\":\"x\"}}",
	`{"action":"\ud800"}`,
	`{"action":"\ud800\u0041"}`,
	`{"action":"\udc00\ud800"}`,
	`{"\u0061ction":"x"}`,
	`{"ac\u0074ion":"x","sender":{"\u212aogin":"kelvin"}}`,
	"{\"sender\":{\"\u212aogin\":\"kelvin\"},\"\u017fender\":{\"login\":\"long s\"}}",
	`{"workflow_run":{"run_number":1e2}}`,
	`{"workflow_run":{"run_number":1.0}}`,
	`{"workflow_run":{"run_number":-0}}`,
	`{"workflow_run":{"id":9223372036854775808}}`,
	`{"workflow_run":{"run_number":null,"pull_requests":null}}`,
	`{"workflow_run":{"pull_requests":[{"number":1},null,{"number":2}]}}`,
	`{"workflow_run":{"run_started_at":" \"2020-01-01T00:00:00Z\""}}`,
	`{"workflow_run":{"updated_at":1557933565,"run_started_at":null}}`,
	`{"pull_request":{"merged":true,"merged":null}}`,
	`{"pull_request":{"base":null}}`,
	`{"branches":[{"name":"a"},{"name":"b"}],"branches":[{"name":"c"}]}`,
	`{"status":"x"} `,
	`{"status":"x"} x`,
	`{"status":"x"}{}`,
	`{"a":"` + "\x01" + `"}`,
	`{"a":[1,2,]}`,
	"\ufeff{}",
	`null`,
	`[]`,
	`"x"`,
	`{"action":"x","action":1}`,
	`{"action":1,"x":}`,
}

func TestDecodeSameAsEncodingJSON(t *testing.T) {
	t.Parallel()
	for _, file := range payloadFiles(t) {
		sameAsEncodingJSON(t, readPayload(t, file))
	}
	for _, s := range decodeSeeds {
		sameAsEncodingJSON(t, []byte(s))
	}
	// Both refuse nesting from 10,000 levels on; neither may accept more.
	for _, n := range []int{9999, 10000, 10001} {
		sameAsEncodingJSON(t, []byte(`{"a":`+strings.Repeat("[", n)+strings.Repeat("]", n)+`}`))
	}
}

func FuzzDecode(f *testing.F) {
	for _, file := range payloadFiles(f) {
		f.Add(readPayload(f, file))
	}
	for _, s := range decodeSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(sameAsEncodingJSON)
}

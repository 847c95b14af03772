package event

import (
	stdjson "encoding/json"

	json "github.com/go-json-experiment/json"
	jsonv1 "github.com/go-json-experiment/json/v1"
)

// decodeOptions read a payload as encoding/json reads it (the same name
// matching, ignoring case; invalid UTF-8 replaced; duplicate names allowed,
// the last one winning; null leaving a field as it is), but in one pass:
// encoding/json.Unmarshal scans the whole document once to validate it and
// again to decode it, and that was half of a delivery's CPU time
// (docs/PERFORMANCE.md). Errors are reported the v2 way, which stops at the
// first one; decode turns every error into encoding/json's own.
var decodeOptions = json.JoinOptions(jsonv1.DefaultOptionsV1(), jsonv1.ReportErrorsWithLegacySemantics(false))

// decode reads body into *p, one of the payload structs.
//
// A body that decodes is valid JSON throughout: the decoder checks every
// byte, the values it skips and what follows the document included. A body
// that does not is decoded again by encoding/json, whose result and error
// (a *json.SyntaxError for a body that is not JSON at all, which the
// handler answers as such) are the ones returned: a refused payload costs
// two passes, an accepted one costs one, and either way the answer is what
// encoding/json gives. FuzzDecode checks that both accept the same bodies
// and read the same values from them.
func decode[T any](body []byte, p *T) error {
	if json.Unmarshal(body, p, decodeOptions) == nil {
		return nil
	}
	var zero T
	*p = zero // what the first pass filled in before it stopped
	return stdjson.Unmarshal(body, p)
}

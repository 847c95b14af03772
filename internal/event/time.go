package event

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Time is a GitHub timestamp. GitHub is not consistent about the encoding:
// most payloads use RFC 3339 strings, but push payloads carry Unix seconds in
// repository.created_at and pushed_at, and unset times arrive as null.
type Time struct {
	time.Time
}

// UnmarshalJSON accepts null (the zero Time), an integer number of Unix
// seconds, or an RFC 3339 string; "" is taken as unset, like null.
func (t *Time) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return fmt.Errorf("event: empty time value")
	}
	switch data[0] {
	case 'n':
		if string(data) != "null" {
			return fmt.Errorf("event: invalid time %s", data)
		}
		// Leave t as it is, as encoding/json does for null.
		return nil
	case '"':
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return fmt.Errorf("event: invalid time %s: %w", data, err)
		}
		if s == "" {
			t.Time = time.Time{}
			return nil
		}
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return fmt.Errorf("event: invalid time %q: %w", s, err)
		}
		t.Time = v
		return nil
	default:
		n, err := strconv.ParseInt(string(data), 10, 64)
		if err != nil {
			return fmt.Errorf("event: invalid time %s: want RFC 3339 string or Unix seconds", data)
		}
		t.Time = time.Unix(n, 0).UTC()
		return nil
	}
}

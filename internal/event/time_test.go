package event

import (
	"encoding/json"
	"testing"
	"time"
)

func TestTimeUnmarshalJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    time.Time
		wantErr bool
	}{
		{in: `1557933565`, want: time.Date(2019, 5, 15, 15, 19, 25, 0, time.UTC)},
		{in: `0`, want: time.Unix(0, 0)},
		{in: `"2020-10-05T16:33:49Z"`, want: time.Date(2020, 10, 5, 16, 33, 49, 0, time.UTC)},
		{in: `"2020-10-05T18:33:49+02:00"`, want: time.Date(2020, 10, 5, 16, 33, 49, 0, time.UTC)},
		{in: `"2020-10-05T16:33:49.123Z"`, want: time.Date(2020, 10, 5, 16, 33, 49, 123e6, time.UTC)},
		{in: `null`},
		{in: `""`},
		{in: `"garbage"`, wantErr: true},
		{in: `"2020-10-05"`, wantErr: true},
		{in: `1.5`, wantErr: true},
		{in: `1e9`, wantErr: true},
		{in: `true`, wantErr: true},
		{in: `{}`, wantErr: true},
		{in: `[]`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			var v struct {
				T Time `json:"t"`
			}
			err := json.Unmarshal([]byte(`{"t":`+tt.in+`}`), &v)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("no error, got %v", v.T)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !v.T.Equal(tt.want) {
				t.Errorf("got %v, want %v", v.T.Time, tt.want)
			}
			if tt.want.IsZero() != v.T.IsZero() {
				t.Errorf("IsZero = %v, want %v", v.T.IsZero(), tt.want.IsZero())
			}
		})
	}
}

// A push payload's repository carries Unix seconds where others carry strings.
func TestTimeInPushPayload(t *testing.T) {
	t.Parallel()
	var p struct {
		Repository struct {
			CreatedAt Time `json:"created_at"`
			PushedAt  Time `json:"pushed_at"`
		} `json:"repository"`
	}
	if err := json.Unmarshal(readPayload(t, "push/payload.json"), &p); err != nil {
		t.Fatal(err)
	}
	if want := time.Unix(1557933565, 0); !p.Repository.CreatedAt.Equal(want) {
		t.Errorf("created_at = %v, want %v", p.Repository.CreatedAt.Time, want)
	}
}

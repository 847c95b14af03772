package event

import "encoding/json"

// summarizeOther records what every event has in common. Such deliveries are
// stored and ignored, so the summary never carries a Note.
func summarizeOther(body []byte) (Summary, error) {
	var p envelope
	if err := json.Unmarshal(body, &p); err != nil {
		return Summary{}, err
	}
	return p.summary(), nil
}

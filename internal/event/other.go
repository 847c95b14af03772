package event

// summarizeOther records what every event has in common. Such deliveries are
// stored and ignored, so the summary never carries a Note.
func summarizeOther(body []byte) (Summary, error) {
	var p envelope
	if err := decode(body, &p); err != nil {
		return Summary{}, err
	}
	return p.summary(), nil
}

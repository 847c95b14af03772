// Package metrics holds the service's counters. They live on a registry the
// caller passes in (no globals), and are shown two ways from that one
// registry: Prometheus text and a flat JSON object.
package metrics

import (
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
)

// Reasons a request is refused or not stored; the label values of failures.
const (
	ReasonTooLarge    = "too_large"
	ReasonSignature   = "bad_signature"
	ReasonHeaders     = "missing_headers"
	ReasonMediaType   = "unsupported_media_type"
	ReasonPayload     = "bad_payload"
	ReasonMethod      = "method_not_allowed"
	ReasonStorage     = "storage"
	ReasonUnavailable = "disabled"
	ReasonSource      = "source_refused" // the client address is not in ALLOWED_SOURCE_CIDRS
)

var reasons = []string{ReasonTooLarge, ReasonSignature, ReasonHeaders, ReasonMediaType,
	ReasonPayload, ReasonMethod, ReasonStorage, ReasonUnavailable, ReasonSource}

// Secret labels say which configured secret verified a delivery.
const (
	SecretCurrent  = "current"
	SecretPrevious = "previous"
)

// Metrics are the service's instruments.
type Metrics struct {
	Deliveries    prometheus.Counter
	Failures      *prometheus.CounterVec
	DedupHits     prometheus.Counter
	Queued        prometheus.Counter
	Filtered      prometheus.Counter
	Ignored       prometheus.Counter
	Suppressed    prometheus.Counter
	SecretMatches *prometheus.CounterVec
	SlackPosts    prometheus.Counter
	SlackFailures prometheus.Counter
	Retries       prometheus.Counter
	RateLimited   prometheus.Counter
	Processing    prometheus.Histogram
	SlackLatency  prometheus.Histogram

	gatherer prometheus.Gatherer
}

// New creates the instruments on reg.
func New(reg *prometheus.Registry) *Metrics {
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: "ciwebhook", Name: name + "_total", Help: help})
		reg.MustRegister(c)
		return c
	}
	m := &Metrics{
		Deliveries:    counter("deliveries", "Deliveries whose signature verified."),
		DedupHits:     counter("dedup_hits", "Deliveries answered as duplicates of a recorded GUID."),
		Queued:        counter("queued", "Deliveries recorded with a Slack message owed."),
		Filtered:      counter("filtered", "Deliveries recorded but kept quiet by a filter."),
		Ignored:       counter("ignored", "Deliveries recorded with nothing (new) to say."),
		Suppressed:    counter("suppressed", "Results NOTIFY_MODE=changes kept quiet (no change: still failing, still passing, superseded, ...); also counted as ignored."),
		SlackPosts:    counter("slack_posts", "Messages Slack accepted (or logged, in log-only mode)."),
		SlackFailures: counter("slack_failures", "Messages given up on."),
		Retries:       counter("retries", "Slack attempts beyond the first for a message."),
		RateLimited:   counter("slack_rate_limited", "Slack answers of 429."),
		Failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ciwebhook", Name: "failures_total",
			Help: "Requests refused or not stored, by reason.",
		}, []string{"reason"}),
		SecretMatches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ciwebhook", Name: "signature_secret_total",
			Help: "Verified deliveries by the secret that matched (current or previous).",
		}, []string{"secret"}),
		Processing: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "ciwebhook", Name: "processing_seconds",
			Help:    "Time to answer a webhook request.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}),
		SlackLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "ciwebhook", Name: "slack_latency_seconds",
			Help:    "Time of one Slack attempt.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		gatherer: reg,
	}
	reg.MustRegister(m.Failures, m.SecretMatches, m.Processing, m.SlackLatency)
	// Every series exists from the start, so dashboards see zeros, not gaps.
	for _, r := range reasons {
		m.Failures.WithLabelValues(r)
	}
	m.SecretMatches.WithLabelValues(SecretCurrent)
	m.SecretMatches.WithLabelValues(SecretPrevious)
	return m
}

// ServeHTTP answers JSON, or the Prometheus text format when the client
// asks for text/plain or ?format=prometheus.
func (m *Metrics) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("format") == "prometheus" || strings.Contains(r.Header.Get("Accept"), "text/plain") {
		promhttp.HandlerFor(m.gatherer, promhttp.HandlerOpts{}).ServeHTTP(w, r)
		return
	}
	out, err := m.JSON()
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		w.WriteHeader(http.StatusInternalServerError)
		json.NewEncoder(w).Encode(map[string]string{"error": "metrics unavailable"})
		return
	}
	json.NewEncoder(w).Encode(out)
}

// JSON flattens the registry: a counter becomes its name without the
// namespace and "_total" (labelled ones also get a "<name>_by_<label>"
// map), a histogram becomes {count, sum, buckets}.
func (m *Metrics) JSON() (map[string]any, error) {
	families, err := m.gatherer.Gather()
	if err != nil {
		return nil, err
	}
	out := map[string]any{}
	for _, f := range families {
		name := strings.TrimSuffix(strings.TrimPrefix(f.GetName(), "ciwebhook_"), "_total")
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			var total float64
			by := map[string]float64{}
			label := ""
			for _, mt := range f.GetMetric() {
				v := mt.GetCounter().GetValue()
				total += v
				if lp := mt.GetLabel(); len(lp) == 1 {
					label = lp[0].GetName()
					by[lp[0].GetValue()] = v
				}
			}
			out[name] = total
			if label != "" {
				out[name+"_by_"+label] = by
			}
		case dto.MetricType_HISTOGRAM:
			for _, mt := range f.GetMetric() {
				h := mt.GetHistogram()
				buckets := map[string]uint64{}
				for _, b := range h.GetBucket() {
					if !math.IsInf(b.GetUpperBound(), 1) {
						buckets[strconv.FormatFloat(b.GetUpperBound(), 'g', -1, 64)] = b.GetCumulativeCount()
					}
				}
				out[name] = map[string]any{"count": h.GetSampleCount(), "sum": h.GetSampleSum(), "buckets": buckets}
			}
		}
	}
	return out, nil
}

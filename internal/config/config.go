// Package config turns the environment (DESIGN.md's table) into one
// validated Config. Every bad value is an error naming its variable, and no
// error ever quotes a secret.
package config

import (
	"encoding/csv"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/bmatcuk/doublestar/v4"
)

// Secret is a string that never prints: not in logs, errors or JSON.
type Secret string

func (Secret) String() string               { return "[redacted]" }
func (Secret) GoString() string             { return "[redacted]" }
func (Secret) LogValue() slog.Value         { return slog.StringValue("[redacted]") }
func (Secret) MarshalText() ([]byte, error) { return []byte("[redacted]"), nil }

// Reveal returns the secret itself, for the one place that uses it.
func (s Secret) Reveal() string { return string(s) }

// Config is the whole service configuration.
type Config struct {
	Enabled bool
	// Secrets verify signatures: the current secret first, then the
	// previous one while a rotation is under way.
	Secrets []Secret

	SlackWebhookURL Secret // empty: log-only mode (unless routes say otherwise)
	// ConfigFile is CONFIG_FILE, the YAML routes (package route reads it).
	ConfigFile string
	// SlackBotToken posts to the channels routes name, through the Web API
	// at SlackAPIURL.
	SlackBotToken    Secret
	SlackAPIURL      string
	SlackMaxAttempts int
	SlackRetryBase   time.Duration
	SlackRate        float64 // messages per second per destination
	SlackBurst       int

	AllowedRepos     []string // lowercased owner/repo or owner/*; empty: all
	AllowedBranches  []string // doublestar globs; empty: all
	IgnoreActors     []string // globs on the actor
	AllowedWorkflows []string // globs on the workflow path or name; empty: all
	IgnoredWorkflows []string
	NotifyPending    bool

	// SlackMentions maps lowercased GitHub logins to Slack user IDs
	// (SLACK_MENTIONS): who a failure message mentions.
	SlackMentions map[string]string
	// NotifyMode is "all" (every result) or "changes" (new failures and
	// fixes only, judged against the previous result).
	NotifyMode string

	LedgerBackend string // sqlite, file or postgres
	LedgerPath    string
	DatabaseURL   Secret
	LedgerLimit   int
	MaxBodyBytes  int64

	// AllowedSources, when set, are the only client addresses the webhook
	// route accepts; TrustedProxies are the peers whose X-Forwarded-For is
	// believed when finding the client address.
	AllowedSources []netip.Prefix
	TrustedProxies []netip.Prefix

	Addr      string
	LogLevel  slog.Level
	LogFormat string // json or text
}

// Backends the ledger can use.
const (
	BackendSQLite   = "sqlite"
	BackendFile     = "file"
	BackendPostgres = "postgres"
)

// Error is a bad setting: which variable, and why.
type Error struct {
	Var    string
	Reason string
}

func (e *Error) Error() string { return e.Var + ": " + e.Reason }

// Load reads the configuration through getenv (os.Getenv in production).
func Load(getenv func(string) string) (Config, error) {
	e := env{get: getenv}
	c := Config{
		Enabled:          e.bool("ENABLE_WEBHOOKS", true),
		SlackMaxAttempts: e.int("SLACK_MAX_ATTEMPTS", 3, 1, 100),
		SlackRetryBase:   e.duration("SLACK_RETRY_BASE", time.Second),
		SlackRate:        e.rate("SLACK_RATE", 1),
		SlackBurst:       5,
		AllowedRepos:     e.repos("ALLOWED_REPOS"),
		AllowedBranches:  e.globs("ALLOWED_BRANCHES"),
		IgnoreActors:     e.globs("IGNORE_ACTORS"),
		AllowedWorkflows: e.globs("ALLOWED_WORKFLOWS"),
		IgnoredWorkflows: e.globs("IGNORED_WORKFLOWS"),
		NotifyPending:    e.bool("NOTIFY_PENDING", false),
		LedgerLimit:      e.int("LEDGER_LIMIT", 1000, 1, 100_000_000),
		MaxBodyBytes:     int64(e.int("MAX_BODY_BYTES", 2<<20, 1, 1<<30)),
		LogLevel:         e.level("LOG_LEVEL"),
		LogFormat:        e.oneOf("LOG_FORMAT", "json", "json", "text"),
	}
	c.SlackWebhookURL = e.slackURL("SLACK_WEBHOOK_URL")
	c.LedgerBackend = e.oneOf("LEDGER_BACKEND", BackendSQLite, BackendSQLite, BackendFile, BackendPostgres)
	c.DatabaseURL = Secret(strings.TrimSpace(getenv("DATABASE_URL")))
	if c.LedgerBackend == BackendPostgres && c.DatabaseURL == "" {
		e.fail("DATABASE_URL", "is required when LEDGER_BACKEND is postgres")
	}
	c.LedgerPath = getenv("LEDGER_PATH")
	if c.LedgerPath == "" {
		c.LedgerPath = "data/ledger.db"
		if c.LedgerBackend == BackendFile {
			c.LedgerPath = "data/ledger.jsonl"
		}
	}
	c.SlackMentions = e.mentions("SLACK_MENTIONS")
	c.Addr = e.addr()
	c.AllowedSources = e.prefixes("ALLOWED_SOURCE_CIDRS")
	c.TrustedProxies = e.prefixes("TRUSTED_PROXIES")
	if len(c.TrustedProxies) > 0 && len(c.AllowedSources) == 0 {
		// The client address found through the proxies is used only by the
		// allowlist; alone, the setting would silently do nothing.
		e.fail("TRUSTED_PROXIES", "has no effect without ALLOWED_SOURCE_CIDRS; set both or neither")
	}
	c.NotifyMode = e.oneOf("NOTIFY_MODE", "all", "all", "changes")
	c.SlackAPIURL = strings.TrimRight(strings.TrimSpace(getenv("SLACK_API_URL")), "/")
	if c.SlackAPIURL == "" {
		c.SlackAPIURL = "https://slack.com/api"
	} else if u, err := url.Parse(c.SlackAPIURL); err != nil || u.Host == "" || (u.Scheme != "https" && !(u.Scheme == "http" && isLoopback(u.Hostname()))) {
		// The bot token goes there: plain http only to a fake on loopback.
		e.fail("SLACK_API_URL", "must be an https URL; plain http is accepted only for a loopback host")
	}
	c.SlackBotToken = e.token("SLACK_BOT_TOKEN")
	c.ConfigFile = strings.TrimSpace(getenv("CONFIG_FILE"))
	if c.Enabled {
		c.Secrets = e.secrets()
	}
	if e.err != nil {
		return Config{}, e.err
	}
	return c, nil
}

// env collects the first error so that Load reads top to bottom.
type env struct {
	get func(string) string
	err error
}

func (e *env) fail(name, reason string) {
	if e.err == nil {
		e.err = &Error{Var: name, Reason: reason}
	}
}

func (e *env) bool(name string, def bool) bool {
	v := strings.TrimSpace(e.get(name))
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		e.fail(name, fmt.Sprintf("%q is not true or false", v))
	}
	return b
}

func (e *env) int(name string, def, lo, hi int) int {
	v := strings.TrimSpace(e.get(name))
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		e.fail(name, fmt.Sprintf("%q is not a whole number from %d to %d", v, lo, hi))
		return def
	}
	return n
}

func (e *env) duration(name string, def time.Duration) time.Duration {
	v := strings.TrimSpace(e.get(name))
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 || d > time.Hour {
		e.fail(name, fmt.Sprintf("%q is not a duration between 0 and 1h, such as 1s or 500ms", v))
		return def
	}
	return d
}

func (e *env) rate(name string, def float64) float64 {
	v := strings.TrimSpace(e.get(name))
	if v == "" {
		return def
	}
	r, err := strconv.ParseFloat(v, 64)
	if err != nil || !(r > 0) || r > 1000 {
		e.fail(name, fmt.Sprintf("%q is not a number of messages per second above 0 and at most 1000", v))
		return def
	}
	return r
}

func (e *env) oneOf(name, def string, allowed ...string) string {
	v := strings.ToLower(strings.TrimSpace(e.get(name)))
	if v == "" {
		return def
	}
	for _, a := range allowed {
		if v == a {
			return v
		}
	}
	e.fail(name, fmt.Sprintf("%q is not one of %s", v, strings.Join(allowed, ", ")))
	return def
}

func (e *env) level(name string) slog.Level {
	v := strings.TrimSpace(e.get(name))
	if v == "" {
		return slog.LevelInfo
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(v)); err != nil {
		e.fail(name, fmt.Sprintf("%q is not debug, info, warn or error", v))
	}
	return l
}

// quotedList splits a comma-separated list the way a CSV record is split,
// so that an item holding a comma, spaces or anything else can be written
// in double quotes: `"Build, test",deploy,"🚀 Release"`; a quote inside a
// quoted item is doubled (`"say ""hi"""`). Unquoted items work as before.
// Blanks around items are trimmed and empty items dropped, but nothing may
// stand between a closing quote and the next comma. A malformed
// value (an unclosed quote, a quote inside an unquoted item, more than one
// line) is an error: guessing would filter the wrong workflows.
func quotedList(v string) ([]string, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return nil, nil
	}
	r := csv.NewReader(strings.NewReader(v))
	r.TrimLeadingSpace = true
	r.FieldsPerRecord = -1
	records, err := r.ReadAll()
	if err != nil {
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("is not a comma-separated list (quote items holding commas as \"a, b\"): %v", err)
	}
	if len(records) != 1 {
		return nil, errors.New("must be one line")
	}
	var out []string
	for _, item := range records[0] {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out, nil
}

// list splits a comma-separated value, trimming blanks and dropping empty
// items (a trailing comma is harmless).
func list(v string) []string {
	var out []string
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// globs reads a list of glob patterns. Items may be quoted (quotedList), so
// workflow names with commas, spaces or emoji can be matched.
func (e *env) globs(name string) []string {
	items, err := quotedList(e.get(name))
	if err != nil {
		e.fail(name, err.Error())
		return nil
	}
	for _, g := range items {
		if !doublestar.ValidatePattern(g) {
			e.fail(name, fmt.Sprintf("%q is not a valid glob", g))
		}
	}
	return items
}

func (e *env) repos(name string) []string {
	items := list(e.get(name))
	for i, r := range items {
		owner, repo, ok := strings.Cut(r, "/")
		if !ok || !validName(owner) || (repo != "*" && !validName(repo)) {
			e.fail(name, fmt.Sprintf("%q is not owner/repo or owner/*", r))
		}
		items[i] = strings.ToLower(r)
	}
	return items
}

var (
	slackUserID = regexp.MustCompile(`^[UW][A-Z0-9]{2,}$`)
	// githubLogin is a user login, or an app's "name[bot]".
	githubLogin = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})(?:\[bot\])?$`)
)

// mentions reads login=SlackUserID pairs, comma-separated, or from a file
// named after an "@" (one pair or several per line, # starts a comment).
// Logins are case-insensitive on GitHub, so the keys are lowercased.
func (e *env) mentions(name string) map[string]string {
	v := strings.TrimSpace(e.get(name))
	if v == "" {
		return nil
	}
	type line struct {
		where, text string
	}
	var lines []line
	if file, ok := strings.CutPrefix(v, "@"); ok {
		b, err := os.ReadFile(file)
		if err != nil {
			e.fail(name, fmt.Sprintf("cannot read %s: %v", file, errors.Unwrap(err)))
			return nil
		}
		for i, l := range strings.Split(string(b), "\n") {
			if c := strings.IndexByte(l, '#'); c >= 0 {
				l = l[:c]
			}
			lines = append(lines, line{fmt.Sprintf("%s:%d: ", file, i+1), l})
		}
	} else {
		lines = []line{{"", v}}
	}
	m := map[string]string{}
	for _, l := range lines {
		for _, pair := range list(l.text) {
			login, id, ok := strings.Cut(pair, "=")
			login, id = strings.TrimSpace(login), strings.TrimSpace(id)
			switch {
			case !ok:
				e.fail(name, fmt.Sprintf("%s%q is not login=SlackUserID", l.where, pair))
			case !githubLogin.MatchString(login):
				e.fail(name, fmt.Sprintf("%s%q is not a GitHub login", l.where, login))
			case !slackUserID.MatchString(id):
				e.fail(name, fmt.Sprintf("%s%q is not a Slack user ID (U… or W…, capitals and digits)", l.where, id))
			case m[strings.ToLower(login)] != "":
				e.fail(name, fmt.Sprintf("%s%s is listed twice", l.where, login))
			default:
				m[strings.ToLower(login)] = id
			}
		}
	}
	if len(m) == 0 {
		e.fail(name, "names nobody; unset it or add login=SlackUserID pairs")
	}
	return m
}

// validName accepts GitHub owner and repository names.
func validName(s string) bool {
	if s == "" || len(s) > 100 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// slackURL accepts https, or plain http to a loopback host (tests, local
// relays). The value is never quoted back: it is a secret.
func (e *env) slackURL(name string) Secret {
	v := strings.TrimSpace(e.get(name))
	if v == "" {
		return ""
	}
	if err := CheckSlackURL(v); err != nil {
		e.fail(name, err.Error())
	}
	return Secret(v)
}

// CheckSlackURL is the rule for a Slack incoming-webhook URL, shared with
// CONFIG_FILE's webhook_url: https, or plain http to a loopback host. Its
// error reads after the setting's name ("is not a URL ...") and never quotes
// the value, which is a secret; url.Parse's own error would, so it is dropped.
func CheckSlackURL(v string) error {
	u, err := url.Parse(v)
	switch {
	case err != nil || u.Host == "":
		return errors.New("is not a URL (value not shown: it is a secret)")
	case u.Scheme == "https":
	case u.Scheme == "http" && isLoopback(u.Hostname()):
	default:
		return errors.New("must be an https URL; plain http is accepted only for a loopback host (value not shown: it is a secret)")
	}
	return nil
}

// token reads a Slack token. The value is never quoted back.
func (e *env) token(name string) Secret {
	v := strings.TrimSpace(e.get(name))
	if v != "" && (!strings.HasPrefix(v, "xox") || strings.ContainsAny(v, " \t\r\n")) {
		e.fail(name, "does not look like a Slack token (a bot token starts with xoxb-; value not shown: it is a secret)")
	}
	return Secret(v)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// prefixes reads comma-separated CIDRs or single addresses, IPv4 or IPv6; a
// single address is a prefix of its full length.
func (e *env) prefixes(name string) []netip.Prefix {
	var out []netip.Prefix
	for _, item := range list(e.get(name)) {
		var (
			p   netip.Prefix
			err error
		)
		if strings.Contains(item, "/") {
			p, err = netip.ParsePrefix(item)
		} else {
			var a netip.Addr
			if a, err = netip.ParseAddr(item); err == nil && a.Zone() != "" {
				err = errors.New("zone") // a zone names a local link, not a source
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		switch {
		case err != nil:
			e.fail(name, fmt.Sprintf("%q is not a CIDR (such as 192.30.252.0/22 or 2606:50c0::/32) or an IP address", item))
			continue
		case p.Addr().Is4In6():
			// Client addresses are compared unmapped, so such a prefix
			// would never match anything.
			e.fail(name, fmt.Sprintf("%q is an IPv4-mapped IPv6 address; write it as IPv4", item))
			continue
		}
		out = append(out, p.Masked())
	}
	return out
}

func (e *env) addr() string {
	if a := strings.TrimSpace(e.get("ADDR")); a != "" {
		if _, _, err := net.SplitHostPort(a); err != nil {
			e.fail("ADDR", fmt.Sprintf("%q is not host:port (such as :8080)", a))
		}
		return a
	}
	port := e.int("PORT", 8080, 1, 65535)
	return ":" + strconv.Itoa(port)
}

// secrets reads the current and previous webhook secrets. Missing or empty
// while enabled is an error: the service never accepts unsigned deliveries.
func (e *env) secrets() []Secret {
	inline, file := e.get("GITHUB_WEBHOOK_SECRET"), e.get("GITHUB_WEBHOOK_SECRET_FILE")
	var current string
	switch {
	case inline != "" && file != "":
		e.fail("GITHUB_WEBHOOK_SECRET", "set it or GITHUB_WEBHOOK_SECRET_FILE, not both")
		return nil
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			e.fail("GITHUB_WEBHOOK_SECRET_FILE", fmt.Sprintf("cannot read %s: %v", file, err))
			return nil
		}
		// Files written by hand usually end in a newline; GitHub's secret
		// field never does.
		current = strings.TrimRight(string(b), "\r\n")
		if current == "" {
			e.fail("GITHUB_WEBHOOK_SECRET_FILE", file+" is empty; the webhook secret is required")
			return nil
		}
	default:
		current = inline
	}
	if strings.TrimSpace(current) == "" {
		e.fail("GITHUB_WEBHOOK_SECRET", "is required (or GITHUB_WEBHOOK_SECRET_FILE) while ENABLE_WEBHOOKS is true; refusing to accept unsigned deliveries")
		return nil
	}
	out := []Secret{Secret(current)}
	if prev := e.get("GITHUB_WEBHOOK_SECRET_PREVIOUS"); prev != "" {
		out = append(out, Secret(prev))
	}
	return out
}

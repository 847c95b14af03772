// Package route reads CONFIG_FILE, the YAML routes of DESIGN.md, and picks
// the routes that take a delivery. A deployment that serves several teams
// sends each team's results to its own Slack destination.
//
// Loading is strict: every mistake stops start-up with "<file>:<line>:
// <reason>", because a route that silently matches nothing (or everything)
// sends CI results to the wrong people. No error ever shows a value that
// came from the environment through ${NAME}: that is how secrets such as
// webhook URLs get into the file.
package route

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"regexp"
	"strconv"
	"strings"
	"unsafe"

	"github.com/bmatcuk/doublestar/v4"
	"go.yaml.in/yaml/v3"

	"github.com/ciwebhook/ciwebhook/internal/config"
)

// Route is one entry of CONFIG_FILE's routes list.
type Route struct {
	// Name is unique, [a-z0-9._-]+, at most 64 characters: it becomes a
	// Prometheus label value and a ledger column.
	Name string
	// Repos are doublestar globs on owner/name, lowercased at load time so
	// that Match only lowercases the delivery's repository. nil: any.
	Repos []string
	// Branches are doublestar globs; nil: any. An event with no branch does
	// not match a route that lists branches; a commit status matches when
	// any of its branches does.
	Branches []string
	// Events are exact GitHub event names (X-GitHub-Event); nil: any.
	Events []string
	// Workflows are doublestar globs on the workflow's name, its file path,
	// or the path's base name. For check suites and runs the caller passes
	// the check or app name as the workflow, for a status its context. nil:
	// any; an event without one (pull_request) does not match a route that
	// lists workflows.
	Workflows []string
	// Exactly one of WebhookURL (an incoming webhook) and Channel (a Slack
	// channel ID, posted with SLACK_BOT_TOKEN) is set.
	WebhookURL config.Secret
	Channel    string
	// Continue lets the routes after this one take the delivery too.
	Continue bool
	// Line is the route's line in the file, for messages.
	Line int
}

// Subject is what a route looks at, taken from one delivery's summary.
type Subject struct {
	Event        string   // X-GitHub-Event
	Repo         string   // owner/name, any case
	Branches     []string // none for events without a branch
	Workflow     string   // workflow name, check or app name, status context
	WorkflowPath string   // the workflow's file, .github/workflows/ci.yml
}

// Match returns the routes that take a delivery, in file order: the first
// route that matches, then further matching routes only while the route
// that matched last has Continue set. Routes in between that do not match
// are skipped, not a stop: continue lets "the next ones" try. Nothing
// matching: nil.
//
// The pointers point into routes. Match runs on the request path, so it does
// not allocate unless something matches; doublestar itself allocates to try
// the alternatives of a {a,b} pattern, so routes using those may.
func Match(routes []Route, s Subject) []*Route {
	var buf [256]byte
	repo := lowerASCII(&buf, s.Repo)
	var out []*Route
	for i := range routes {
		r := &routes[i]
		if !r.matches(repo, s) {
			continue
		}
		out = append(out, r)
		if !r.Continue {
			break
		}
	}
	return out
}

// matches reports whether r takes s; repo is s.Repo lowercased.
func (r *Route) matches(repo string, s Subject) bool {
	if r.Events != nil && !contains(r.Events, s.Event) {
		return false
	}
	if r.Repos != nil && !MatchAny(r.Repos, repo) {
		return false
	}
	if r.Branches != nil && !AnyBranch(r.Branches, s.Branches) {
		return false
	}
	if r.Workflows != nil && !WorkflowMatch(r.Workflows, s.Workflow, s.WorkflowPath) {
		return false
	}
	return true
}

func contains(list []string, v string) bool {
	for _, item := range list {
		if item == v {
			return true
		}
	}
	return false
}

// MatchAny reports whether name matches any of globs, which must have been
// validated (doublestar.ValidatePattern): Parse and config.Load do that.
func MatchAny(globs []string, name string) bool {
	for _, g := range globs {
		if doublestar.MatchUnvalidated(g, name) {
			return true
		}
	}
	return false
}

// AnyBranch reports whether any of branches matches any of globs; none
// when the event has no branch.
func AnyBranch(globs, branches []string) bool {
	for _, b := range branches {
		if MatchAny(globs, b) {
			return true
		}
	}
	return false
}

// WorkflowMatch matches globs against a workflow's name, its file path, or
// the file's base name, so "ci.yml" works as well as the path. Routes and
// ALLOWED_WORKFLOWS/IGNORED_WORKFLOWS match workflows this one way.
func WorkflowMatch(globs []string, name, file string) bool {
	if name != "" && MatchAny(globs, name) {
		return true
	}
	if file == "" {
		return false
	}
	return MatchAny(globs, file) || MatchAny(globs, path.Base(file))
}

// lowerASCII lowercases s into buf without allocating: repository names
// are ASCII and often mixed case ("Octo-Org/Hello-World"), and Match must
// not allocate per delivery. The string it returns shares buf (unsafe.String
// instead of a copying conversion), so buf must not be written again while
// the string is in use; Match's buf stays on the stack because nothing keeps
// the string (doublestar does not keep its arguments), which
// TestMatchDoesNotAllocate checks. Anything longer than buf or not ASCII
// goes through strings.ToLower.
func lowerASCII(buf *[256]byte, s string) string {
	upper := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x80 {
			return strings.ToLower(s)
		}
		upper = upper || ('A' <= c && c <= 'Z')
	}
	if !upper {
		return s
	}
	if len(s) > len(buf) {
		return strings.ToLower(s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	return unsafe.String(&buf[0], len(s))
}

// Error is a bad CONFIG_FILE: the file, the 1-based line of the offending
// key or route, and why. Line is 0 only when the YAML parser gave none.
type Error struct {
	File   string
	Line   int
	Reason string
}

func (e *Error) Error() string {
	if e.Line == 0 {
		return e.File + ": " + e.Reason
	}
	return e.File + ":" + strconv.Itoa(e.Line) + ": " + e.Reason
}

// Load reads and checks the YAML file at path; getenv (os.Getenv in
// production) expands ${NAME}, as Parse describes. An unreadable file is
// os.ReadFile's error, which names it.
func Load(path string, getenv func(string) string) ([]Route, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data, getenv)
}

// Parse is Load on bytes already read; file names them in messages. The
// first mistake found is returned as an *Error.
//
// In every string value (not in keys), ${NAME} is replaced by getenv(NAME),
// NAME being [A-Za-z_][A-Za-z0-9_]*. An unset or empty variable is an
// error. There is no escape: "$$" is two dollars, and a "$" not followed by
// "{" is kept as it is; a "${" must be closed by "}". Messages quote values
// as written in the file, before expansion.
func Parse(file string, data []byte, getenv func(string) string) ([]Route, error) {
	p := &parser{file: file, getenv: getenv}
	return p.parse(data)
}

type parser struct {
	file   string
	getenv func(string) string
}

func (p *parser) errf(line int, format string, args ...any) *Error {
	return &Error{File: p.file, Line: line, Reason: fmt.Sprintf(format, args...)}
}

// yamlLine picks the line out of the YAML library's message, "yaml: line
// 3: did not find expected node content"; it has no error type for it.
var yamlLine = regexp.MustCompile(`^yaml: (?:line (\d+): )?`)

func (p *parser) yamlError(err error) *Error {
	msg := err.Error()
	line := 0
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = msg[len(m[0]):]
	}
	return p.errf(line, "is not valid YAML: %s", msg)
}

func (p *parser) parse(data []byte) ([]Route, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	switch err := dec.Decode(&doc); {
	case errors.Is(err, io.EOF):
		return nil, p.errf(1, "routes is missing (the file is empty); list routes under it, or unset CONFIG_FILE")
	case err != nil:
		return nil, p.yamlError(err)
	}
	// A second document would be ignored by Decode; an operator who
	// appends one expects it to count.
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, p.yamlError(err)
	default:
		return nil, p.errf(next.Line, "a second YAML document (after ---) is not read; put all routes in one")
	}
	if len(doc.Content) == 0 {
		return nil, p.errf(1, "routes is missing (the file is empty); list routes under it, or unset CONFIG_FILE")
	}
	top := deref(doc.Content[0])
	if top.Kind != yaml.MappingNode {
		return nil, p.errf(top.Line, "the file must be a mapping with a routes key")
	}
	var routes *yaml.Node
	err := p.fields(top, func(key, val *yaml.Node) error {
		if key.Value != "routes" {
			return p.errf(key.Line, "unknown key %q; the top level has only routes", key.Value)
		}
		routes = val
		return nil
	})
	if err != nil {
		return nil, err
	}
	if routes == nil {
		return nil, p.errf(top.Line, "routes is missing; list routes under it, or unset CONFIG_FILE")
	}
	return p.routes(routes)
}

// deref follows an alias to its anchored node. The copy it returns has the
// alias's line, so that a message about the value points where it is used;
// the items inside keep their own lines, where they are written. The loop
// is bounded because yaml.v3 never makes an alias of an alias, but fuzzing
// should not hang on a surprise.
func deref(n *yaml.Node) *yaml.Node {
	if n.Kind != yaml.AliasNode {
		return n
	}
	line := n.Line
	for i := 0; i < 8 && n.Kind == yaml.AliasNode && n.Alias != nil; i++ {
		n = n.Alias
	}
	c := *n
	c.Line = line
	return &c
}

// isNull reports a value left empty ("key:"), ~ or null.
func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// fields calls f for each key of a mapping, in order, after checking that
// the key is a plain word and not repeated: yaml.v3 keeps both copies of a
// repeated key in a Node, and a silently dropped one is a trap.
func (p *parser) fields(m *yaml.Node, f func(key, val *yaml.Node) error) error {
	seen := map[string]int{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		key, val := deref(m.Content[i]), m.Content[i+1]
		if key.Kind != yaml.ScalarNode {
			return p.errf(m.Content[i].Line, "a key must be a plain word")
		}
		if key.ShortTag() == "!!merge" {
			return p.errf(key.Line, "merge keys (<<) are not supported; write the keys out")
		}
		if first, ok := seen[key.Value]; ok {
			return p.errf(key.Line, "%s is given twice (first at line %d)", key.Value, first)
		}
		seen[key.Value] = key.Line
		if err := f(key, deref(val)); err != nil {
			return err
		}
	}
	return nil
}

func (p *parser) routes(n *yaml.Node) ([]Route, error) {
	if isNull(n) || (n.Kind == yaml.SequenceNode && len(n.Content) == 0) {
		return nil, p.errf(n.Line, "routes is empty; unset CONFIG_FILE instead")
	}
	if n.Kind != yaml.SequenceNode {
		return nil, p.errf(n.Line, "routes must be a list of routes (- name: ...)")
	}
	out := make([]Route, 0, len(n.Content))
	names := map[string]int{}
	for i, item := range n.Content {
		item = deref(item)
		if item.Kind != yaml.MappingNode {
			return nil, p.errf(item.Line, "route %d must be a mapping of keys such as name and repos", i+1)
		}
		r, err := p.route(item)
		if err != nil {
			return nil, err
		}
		if first, ok := names[r.Name]; ok {
			return nil, p.errf(r.Line, "name %q is already used by the route at line %d", r.Name, first)
		}
		names[r.Name] = r.Line
		out = append(out, r)
	}
	return out, nil
}

var (
	routeName = regexp.MustCompile(`^[a-z0-9._-]{1,64}$`)
	eventName = regexp.MustCompile(`^[a-z_]+$`)
	channelID = regexp.MustCompile(`^[CGD][A-Z0-9]{8,}$`)
)

func (p *parser) route(m *yaml.Node) (Route, error) {
	r := Route{Line: m.Line}
	var hasName bool
	var urlLine, channelLine int
	err := p.fields(m, func(key, val *yaml.Node) error {
		var err error
		switch k := key.Value; k {
		case "name":
			var v scalar
			if v, err = p.str(k, val); err != nil {
				return err
			}
			if !routeName.MatchString(v.val) {
				return p.errf(val.Line, "name %s is not valid: use lowercase letters, digits, '.', '_' and '-', at most 64 characters (it becomes a metric label)", v)
			}
			r.Name, hasName = v.val, true
		case "repos":
			if r.Repos, err = p.globs(k, val, "repository"); err == nil {
				for i, g := range r.Repos {
					// Lowered once here so that Match lowercases only the
					// delivery's repository.
					r.Repos[i] = strings.ToLower(g)
				}
			}
		case "branches":
			r.Branches, err = p.globs(k, val, "branch")
		case "workflows":
			r.Workflows, err = p.globs(k, val, "workflow")
		case "events":
			var items []scalar
			if items, err = p.list(k, val, "event"); err != nil {
				return err
			}
			r.Events = make([]string, len(items))
			for i, v := range items {
				// Unknown names are accepted: GitHub adds events.
				if !eventName.MatchString(v.val) {
					return p.errf(v.line, "events: %s is not an event name (lowercase letters and _, as X-GitHub-Event sends: workflow_run)", v)
				}
				r.Events[i] = v.val
			}
		case "webhook_url":
			var v scalar
			if v, err = p.str(k, val); err != nil {
				return err
			}
			// As config does for SLACK_WEBHOOK_URL: a value read from a
			// secret file often ends in a newline.
			u := strings.TrimSpace(v.val)
			if err := config.CheckSlackURL(u); err != nil {
				return p.errf(val.Line, "webhook_url %v", err)
			}
			r.WebhookURL, urlLine = config.Secret(u), key.Line
		case "channel":
			var v scalar
			if v, err = p.str(k, val); err != nil {
				return err
			}
			if !channelID.MatchString(v.val) {
				return p.errf(val.Line, "channel %s is not a Slack channel ID (C, G or D then capitals and digits, such as C0123456789); a channel name like #ci is not accepted: the ID is at the bottom of the channel's details in Slack", v)
			}
			r.Channel, channelLine = v.val, key.Line
		case "continue":
			if val.Kind != yaml.ScalarNode || val.ShortTag() != "!!bool" {
				return p.errf(val.Line, "continue must be true or false")
			}
			if val.Decode(&r.Continue) != nil { // "!!bool yes"
				return p.errf(val.Line, "continue must be true or false")
			}
		default:
			return p.errf(key.Line, "unknown key %q in a route; the keys are name, repos, branches, events, workflows, webhook_url, channel and continue", k)
		}
		return err
	})
	if err != nil {
		return Route{}, err
	}
	switch {
	case !hasName:
		return Route{}, p.errf(r.Line, "the route has no name; give it one (lowercase letters, digits, '.', '_', '-')")
	case urlLine == 0 && channelLine == 0:
		return Route{}, p.errf(r.Line, "route %q has no destination; give it webhook_url or channel", r.Name)
	case urlLine != 0 && channelLine != 0:
		return Route{}, p.errf(max(urlLine, channelLine), "route %q has both webhook_url and channel; give one", r.Name)
	}
	return r, nil
}

// scalar is one string value: as written (for messages) and expanded.
type scalar struct {
	raw, val string
	line     int
	expanded bool
}

// String quotes the value as written in the file, never the expanded one,
// which may hold a secret.
func (s scalar) String() string {
	if s.expanded {
		return strconv.Quote(s.raw) + " (after ${} expansion)"
	}
	return strconv.Quote(s.raw)
}

// str reads a string value. A scalar of any tag but null is taken as its
// text: a branch named 1.10 should not need quotes.
func (p *parser) str(key string, n *yaml.Node) (scalar, error) {
	switch {
	case isNull(n) && key == "channel":
		// "channel: #ci" is a comment, so the value is empty.
		return scalar{}, p.errf(n.Line, "channel is empty (an unquoted # starts a YAML comment); give the channel ID, such as C0123456789, from the channel's details in Slack")
	case isNull(n):
		return scalar{}, p.errf(n.Line, "%s is empty", key)
	case n.Kind != yaml.ScalarNode:
		return scalar{}, p.errf(n.Line, "%s must be a string", key)
	}
	v, err := p.expand(key, n)
	if err != nil {
		return scalar{}, err
	}
	if v.val == "" {
		return scalar{}, p.errf(n.Line, "%s is empty", key)
	}
	return v, nil
}

// list reads a list of strings. Absent means any, so an empty list (which
// would match nothing) is refused rather than guessed at.
func (p *parser) list(key string, n *yaml.Node, what string) ([]scalar, error) {
	if isNull(n) || (n.Kind == yaml.SequenceNode && len(n.Content) == 0) {
		return nil, p.errf(n.Line, "%s is empty; leave it out to match any %s", key, what)
	}
	if n.Kind != yaml.SequenceNode {
		return nil, p.errf(n.Line, "%s must be a list of strings, such as [\"a\", \"b\"]", key)
	}
	out := make([]scalar, len(n.Content))
	for i, item := range n.Content {
		item = deref(item)
		if item.Kind != yaml.ScalarNode || isNull(item) {
			return nil, p.errf(item.Line, "%s must be a list of strings; item %d is not a string", key, i+1)
		}
		v, err := p.expand(key, item)
		if err != nil {
			return nil, err
		}
		if v.val == "" {
			return nil, p.errf(item.Line, "%s: item %d is empty", key, i+1)
		}
		out[i] = v
	}
	return out, nil
}

func (p *parser) globs(key string, n *yaml.Node, what string) ([]string, error) {
	items, err := p.list(key, n, what)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(items))
	for i, v := range items {
		if !doublestar.ValidatePattern(v.val) {
			return nil, p.errf(v.line, "%s: %s is not a valid glob", key, v)
		}
		out[i] = v.val
	}
	return out, nil
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// expand replaces each ${NAME} in a scalar; see Parse.
func (p *parser) expand(key string, n *yaml.Node) (scalar, error) {
	s := scalar{raw: n.Value, line: n.Line}
	rest := n.Value
	var b strings.Builder
	for {
		i := strings.Index(rest, "${")
		if i < 0 {
			break
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return scalar{}, p.errf(n.Line, "%s has a ${ without a closing }", key)
		}
		name := rest[i+2 : i+j]
		if !envName.MatchString(name) {
			return scalar{}, p.errf(n.Line, "%s: ${%s} is not a variable name (letters, digits and _, not starting with a digit)", key, name)
		}
		v := p.getenv(name)
		if v == "" {
			// Only the name: the value is unset anyway, and the message
			// must never show one.
			return scalar{}, p.errf(n.Line, "%s: environment variable %s is unset or empty", key, name)
		}
		b.WriteString(rest[:i])
		b.WriteString(v)
		rest = rest[i+j+1:]
	}
	if rest == n.Value { // nothing to expand: no copy
		s.val = n.Value
		return s, nil
	}
	b.WriteString(rest)
	s.val, s.expanded = b.String(), true
	return s, nil
}

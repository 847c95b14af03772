package slack

import (
	"net/url"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Block Kit limits, counted in characters of the text as sent (after
// escaping). Slack rejects the whole message with invalid_blocks when one is
// exceeded, so a long title must never cost the notification.
const (
	maxSectionText  = 3000
	maxContextText  = 3000
	maxContextElems = 10
	maxBlocks       = 50
	maxFallbackText = 300 // Slack allows 3000; mobile notifications show far less

	// A longer URL is not GitHub's; dropping the link beats crowding out
	// the rest of the context line.
	maxLinkURL = 1000
)

const ellipsis = "…"

const redacted = "[redacted]"

// tokenPatterns are the credential shapes most likely to be pasted into a
// commit message, PR title or status description. Each has a literal that
// must occur for it to match, so clean text skips the regexp.
var tokenPatterns = []struct {
	literal string
	re      *regexp.Regexp
}{
	{"gh", regexp.MustCompile(`gh[pousr]_[A-Za-z0-9]{36,}`)},
	{"github_pat_", regexp.MustCompile(`github_pat_[A-Za-z0-9_]{20,}`)},
	{"xox", regexp.MustCompile(`xox[abpors]-[A-Za-z0-9-]+`)},
	{"AKIA", regexp.MustCompile(`AKIA[0-9A-Z]{16}`)},
}

// urlCredentials matches the userinfo of a URL up to its last '@' before the
// path, so a password that itself holds an unescaped '@' is hidden whole.
var urlCredentials = regexp.MustCompile(`(?i)([a-z][a-z0-9+.-]*://)[^/?#\s]+@`)

// redact hides secrets in text that came from GitHub. It runs before escaping
// and before cutting, so a token cut in half cannot slip past as a prefix.
func redact(s string) string {
	if strings.Contains(s, "://") {
		s = urlCredentials.ReplaceAllString(s, "${1}"+redacted+"@")
	}
	for _, p := range tokenPatterns {
		if strings.Contains(s, p.literal) {
			s = p.re.ReplaceAllLiteralString(s, redacted)
		}
	}
	return s
}

var mrkdwnEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

// escape makes text inert for mrkdwn: with '<' gone, nothing from GitHub can
// form a mention (<!channel>, <@U…>) or a link with a misleading label.
func escape(s string) string { return mrkdwnEscaper.Replace(s) }

// sanitize makes one line of valid UTF-8: a newline in a title would break
// the message's shape, and bidi overrides can make text read other than it is.
func sanitize(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		switch {
		case isBidiControl(r):
			return -1
		case unicode.IsControl(r), r == '\u2028', r == '\u2029': // line and paragraph separators
			return ' '
		}
		return r
	}, s)
	return strings.TrimSpace(s)
}

func isBidiControl(r rune) bool {
	return (r >= '\u202A' && r <= '\u202E') || (r >= '\u2066' && r <= '\u2069') ||
		r == '\u200E' || r == '\u200F' || r == '\u061C'
}

// field turns one GitHub-provided string into mrkdwn of at most max
// characters. The order matters: redact sees the whole secret, and clip
// counts what Slack counts.
func field(s string, max int) string {
	return clip(escape(redact(sanitize(s))), max)
}

// clip cuts mrkdwn to at most max characters, ellipsis included. It never
// cuts inside an entity (&amp;) or a link (<url|label>), which Slack would
// show as debris or reject, nor inside an emoji sequence.
func clip(s string, max int) string {
	if utf8.RuneCountInString(s) <= max {
		return s
	}
	if max < 1 {
		return ""
	}
	budget := max - utf8.RuneCountInString(ellipsis)
	cut, n := 0, 0
	inLink, inEntity := false, false
	var prev rune
	for i, r := range s {
		if n > budget {
			break
		}
		if !inLink && !inEntity && !joinsPrevious(prev, r) {
			cut = i
		}
		switch {
		case inLink:
			inLink = r != '>'
		case inEntity:
			inEntity = r != ';'
		case r == '<':
			inLink = true
		case r == '&':
			inEntity = true
		}
		n++
		prev = r
	}
	return strings.TrimRight(s[:cut], " ") + ellipsis
}

// joinsPrevious reports whether r belongs to the same visible character as
// prev, so that cutting between them would leave half an emoji or accent.
func joinsPrevious(prev, r rune) bool {
	const zwj = '\u200D'
	switch {
	case prev == zwj, r == zwj:
		return true
	case r >= '\uFE00' && r <= '\uFE0F': // variation selectors
		return true
	case r >= 0x1F3FB && r <= 0x1F3FF: // skin tones
		return true
	case r >= 0xE0020 && r <= 0xE007F: // tag sequences (subdivision flags)
		return true
	}
	return unicode.In(r, unicode.Mn, unicode.Me, unicode.Mc)
}

// link builds a mrkdwn link to a URL from GitHub with a label of our own.
// Only http and https are linked; anything else yields "" and the caller
// leaves the link out.
func link(raw, label string) string {
	u := linkURL(raw)
	if u == "" {
		return ""
	}
	return "<" + u + "|" + escape(label) + ">"
}

// linkURL returns raw as it may appear between '<' and '|': credentials
// removed, tokens redacted, and every byte that could end the link early
// ('|', '>') or start a new one percent-encoded.
func linkURL(raw string) string {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return ""
	}
	u.User = nil
	s := redact(u.String())
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '&':
			b.WriteString("&amp;")
		case isURLSafe(c):
			b.WriteByte(c)
		default:
			const hex = "0123456789ABCDEF"
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		}
	}
	if b.Len() > maxLinkURL {
		return ""
	}
	return b.String()
}

// isURLSafe is RFC 3986's unreserved and reserved characters plus '%',
// minus '&' (escaped as an entity instead).
func isURLSafe(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-._~:/?#[]@!$'()*+,;=%", c) >= 0
}

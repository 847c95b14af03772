package githook

import (
	"net/http"
	"net/netip"
	"strings"
)

// Sources is the optional source allowlist of the webhook route. The zero
// value allows every source.
//
// The client address is the connection's peer, unless that peer is a
// trusted proxy: then X-Forwarded-For is walked from the right (each proxy
// appends the address it received the request from), skipping trusted
// proxies, and the first address that is not one is the client. Entries to
// the left of it were written by parties no one vouches for, and anyone can
// send a forged X-Forwarded-For, so they are never read; an untrusted peer's
// header is not read at all.
type Sources struct {
	Allowed []netip.Prefix // empty: any source
	Trusted []netip.Prefix // proxies whose X-Forwarded-For is believed
}

// Allow reports whether r comes from an allowed source, and the client
// address it decided on ("unknown" when the peer address is unreadable).
// It never touches the body.
func (s Sources) Allow(r *http.Request) (client string, ok bool) {
	if len(s.Allowed) == 0 {
		return "", true
	}
	addr, found := s.Client(r)
	if !found {
		// An address we cannot read cannot be shown to be allowed.
		return "unknown", false
	}
	return addr.String(), contains(s.Allowed, addr)
}

// Client returns the client address of r (see Sources), and false when the
// connection's own address cannot be read.
func (s Sources) Client(r *http.Request) (netip.Addr, bool) {
	peer, ok := parseHop(r.RemoteAddr)
	if !ok {
		return netip.Addr{}, false
	}
	client := peer
	if !contains(s.Trusted, client) {
		return client, true
	}
	// Several X-Forwarded-For headers are one list, in order (RFC 9110).
	xff := strings.Join(r.Header.Values("X-Forwarded-For"), ",")
	if strings.TrimSpace(xff) == "" {
		return client, true // the proxy forwarded nothing: it is the client
	}
	hops := strings.Split(xff, ",")
	for i := len(hops) - 1; i >= 0 && contains(s.Trusted, client); i-- {
		next, ok := parseHop(strings.TrimSpace(hops[i]))
		if !ok {
			// A trusted proxy passed on something that is not an address:
			// nothing to its left can be believed, so the proxy is the
			// client, refused unless it is itself allowed.
			break
		}
		client = next
	}
	return client, true
}

// parseHop reads an address as found in RemoteAddr or X-Forwarded-For:
// "ip", "ip:port", "[ipv6]" or "[ipv6]:port". IPv4-mapped IPv6 addresses
// are unmapped, so that IPv4 prefixes match them (a dual-stack listener
// reports IPv4 peers that way), and a zone is dropped: netip never matches
// a zoned address against a prefix.
func parseHop(s string) (netip.Addr, bool) {
	if s == "" {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		if ap, perr := netip.ParseAddrPort(s); perr == nil {
			a, err = ap.Addr(), nil
		} else if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
			a, err = netip.ParseAddr(s[1 : len(s)-1])
		}
	}
	if err != nil {
		return netip.Addr{}, false
	}
	return a.WithZone("").Unmap(), true
}

func contains(prefixes []netip.Prefix, a netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

package cache

import (
	"maps"
	"slices"

	"google.golang.org/protobuf/types/known/anypb"
)

// Held is what a proxy holds of one xDS type, as far as the cache knows:
// the resources it was last sent, as marshaled, for the client status
// service (weft config) to show.
type Held struct {
	TypeURL string
	// Sent is the version of the type the proxy was last sent ("" when it
	// was sent nothing yet); Current is the version the cache holds for it
	// now. They differ while a change waits for the proxy's answer to the
	// last response.
	Sent, Current string
	// Version is the version Resources make: Sent, or Current where the
	// cache cannot tell what an earlier version held (a delta stream that
	// has not been sent the latest change yet, or a type not sent yet).
	Version   string
	Resources []Resource
}

// Resource is one resource as the cache marshaled it.
type Resource struct {
	Name string
	Any  *anypb.Any
}

// Held returns, for each type the proxy asked for (sorted by type URL),
// what it was last sent: on a state-of-the-world stream, the resources of
// the last response; on a delta stream, the node's resources that the
// stream subscribes to, which is what it holds once it has been sent
// every change. Nil for a proxy the cache does not know.
func (c *Cache) Held(id string) []Held {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[id]
	if n == nil {
		return nil
	}
	var out []Held
	for _, typeURL := range slices.Sorted(maps.Keys(n.asked)) {
		out = append(out, n.held(typeURL, nil))
	}
	return out
}

// HeldOf is Held for one type, with only the resources whose names keep
// accepts (every one when keep is nil); ok is false when the proxy is not
// known or has not asked for the type.
func (c *Cache) HeldOf(id, typeURL string, keep func(name string) bool) (h Held, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[id]
	if n == nil || !n.asked[typeURL] {
		return Held{}, false
	}
	return n.held(typeURL, keep), true
}

// held is what the node holds of one type it asked for.
func (n *node) held(typeURL string, keep func(name string) bool) Held {
	h := Held{TypeURL: typeURL, Current: n.versions[typeURL]}
	if n.answered[typeURL] {
		h.Sent = n.needed[typeURL]
	}
	kept := func(name string) bool { return keep == nil || keep(name) }
	switch dt := n.deltaType(typeURL); {
	case dt != nil:
		h.Version = h.Current
		if dt.seq == n.changes[typeURL] {
			h.Version = h.Sent
		}
		n.each(typeURL, func(name string, e *entry) {
			if dt.wants(name) && kept(name) {
				h.Resources = append(h.Resources, Resource{Name: name, Any: e.any})
			}
		})
	case n.lastSent[typeURL] != nil:
		r := n.lastSent[typeURL]
		h.Version = r.out.VersionInfo
		for i, a := range r.out.Resources {
			if kept(r.names[i]) {
				h.Resources = append(h.Resources, Resource{Name: r.names[i], Any: a})
			}
		}
	default:
		h.Version = h.Current
		n.each(typeURL, func(name string, e *entry) {
			if kept(name) {
				h.Resources = append(h.Resources, Resource{Name: name, Any: e.any})
			}
		})
	}
	return h
}

// deltaType is the state, for one type, of a delta stream of the node that
// has been sent that type; nil when none has.
func (n *node) deltaType(typeURL string) *deltaType {
	for ds := range n.deltas {
		if t := ds.types[typeURL]; t != nil && t.started {
			return t
		}
	}
	return nil
}

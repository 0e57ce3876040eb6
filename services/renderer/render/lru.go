package render

import (
	"container/list"
	"sync"
	"text/template"
)

// lru is a bounded map, least recently used out first, safe for concurrent use. The renderer keeps
// four: outputs by everything that decides them, loaded charts by digest, parsed values files
// by content, parsed templates by their names and text.
type lru[V any] struct {
	mu      sync.Mutex
	max     int
	entries map[string]*list.Element
	order   *list.List // front: most recent
}

type lruEntry[V any] struct {
	key   string
	value V
}

func newLRU[V any](max int) *lru[V] {
	return &lru[V]{max: max, entries: map[string]*list.Element{}, order: list.New()}
}

func (c *lru[V]) get(key string) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[key]
	if !ok {
		var zero V
		return zero, false
	}
	c.order.MoveToFront(el)
	return el.Value.(*lruEntry[V]).value, true
}

// put stores value under key, unless key is there already (the first value stays: equal keys
// stand for equal values).
func (c *lru[V]) put(key string, value V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[key]; ok {
		c.order.MoveToFront(el)
		return
	}
	c.entries[key] = c.order.PushFront(&lruEntry[V]{key: key, value: value})
	for c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.entries, last.Value.(*lruEntry[V]).key)
	}
}

// parsedTemplates keeps parsed template sets for helmengine.
type parsedTemplates struct{ *lru[*template.Template] }

func (p parsedTemplates) Get(key string) (*template.Template, bool) { return p.get(key) }
func (p parsedTemplates) Put(key string, t *template.Template)      { p.put(key, t) }

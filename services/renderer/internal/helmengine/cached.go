package helmengine

// This file is troupe's, not a copy of Helm's (see doc.go).

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path"
	"strings"
	"text/template"

	ci "helm.sh/helm/v4/pkg/chart"
	"helm.sh/helm/v4/pkg/chart/common"
)

// Parsed keeps parsed template sets between renders by key. Implementations must be safe for
// concurrent use; the sets are never changed after Put (renders execute clones of them).
type Parsed interface {
	Get(key string) (*template.Template, bool)
	Put(key string, t *template.Template)
}

// RenderCached renders as RenderWithContext does, but parses the chart's templates only when
// parsed holds no set with the same template names and text: otherwise it executes a clone of
// that set, with include, tpl and the other functions bound to the clone as Helm binds them.
// Output and errors are Helm's.
func (e Engine) RenderCached(ctx context.Context, parsed Parsed, chrt ci.Charter, values common.Values) (map[string]string, error) {
	tpls := allTemplates(chrt, values)
	keys := sortTemplates(tpls)
	key := templatesKey(keys, tpls)
	t, ok := parsed.Get(key)
	if !ok {
		var err error
		if t, err = e.parse(ctx, keys, tpls); err != nil {
			return map[string]string{}, err
		}
		parsed.Put(key, t)
	}
	return e.execute(ctx, t, keys, tpls)
}

// templatesKey identifies a template set by the names and text of its templates, in parse order.
func templatesKey(keys []string, tpls map[string]renderable) string {
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%d:%s%d:", len(k), k, len(tpls[k].tpl))
		h.Write([]byte(tpls[k].tpl))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// parse is the first half of Engine.render: every template parsed into one set, in Helm's order.
func (e Engine) parse(ctx context.Context, keys []string, tpls map[string]renderable) (t *template.Template, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("rendering template failed: %v", r)
		}
	}()
	t = template.New("gotpl")
	e.setMissingKey(t)
	e.initFunMap(ctx, t)
	for _, filename := range keys {
		if _, err := t.New(filename).Parse(tpls[filename].tpl); err != nil {
			return nil, cleanupParseError(filename, err)
		}
	}
	return t, nil
}

// execute is the second half of Engine.render, on a clone of parsed with the functions bound to
// the clone (include and tpl execute the clone's templates; each render counts its own includes).
func (e Engine) execute(ctx context.Context, parsed *template.Template, keys []string, tpls map[string]renderable) (rendered map[string]string, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("rendering template failed: %v", r)
		}
	}()
	t, err := parsed.Clone()
	if err != nil {
		return map[string]string{}, fmt.Errorf("cannot clone template: %w", err)
	}
	e.setMissingKey(t) // Clone may not carry options over: golang/go#43022, as tplFun notes
	e.initFunMap(ctx, t)
	rendered = make(map[string]string, len(keys))
	for _, filename := range keys {
		if strings.HasPrefix(path.Base(filename), "_") {
			continue
		}
		vals := tpls[filename].vals
		vals["Template"] = common.Values{"Name": filename, "BasePath": tpls[filename].basePath}
		var buf strings.Builder
		if err := t.ExecuteTemplate(&buf, filename, vals); err != nil {
			return map[string]string{}, reformatExecErrorMsg(filename, err)
		}
		rendered[filename] = strings.ReplaceAll(buf.String(), "<no value>", "")
	}
	return rendered, nil
}

func (e Engine) setMissingKey(t *template.Template) {
	if e.Strict {
		t.Option("missingkey=error")
	} else {
		t.Option("missingkey=zero")
	}
}

// WithClientProvider returns an engine whose lookup function reads objects through p, as New
// gives one reading them through a rest.Config.
func WithClientProvider(p ClientProvider) Engine {
	return Engine{clientProvider: &p}
}

package apply

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/troupe-dev/troupe/events"
)

// TestErrorDetail: release.failed's message names each failing object once, objects with the
// same message share it, ten objects at most; Error() is the reason code and the detail.
func TestErrorDetail(t *testing.T) {
	ref := func(kind, name string) events.ObjectRef {
		return events.ObjectRef{APIVersion: "v1", Kind: kind, Namespace: "web", Name: name}
	}
	missing := "namespace web does not exist"
	e := &Error{Reason: ReasonNamespaceNotFound, Objects: []ObjectError{
		{Ref: ref("Deployment", "a"), Message: missing},
		{Ref: ref("ConfigMap", "b"), Message: "data: too long"},
		{Ref: ref("Service", "a"), Message: missing},
	}}
	assert.Equal(t, "Deployment web/a, Service web/a: namespace web does not exist; ConfigMap web/b: data: too long", e.Detail())
	assert.Equal(t, "namespace_not_found: "+e.Detail(), e.Error())

	var many []ObjectError
	for i := range 13 {
		many = append(many, ObjectError{Ref: ref("ConfigMap", fmt.Sprint(i)), Message: fmt.Sprint("bad ", i%2)})
	}
	d := (&Error{Reason: ReasonInvalidObject, Objects: many}).Detail()
	assert.Equal(t, "ConfigMap web/0, ConfigMap web/2, ConfigMap web/4, ConfigMap web/6, ConfigMap web/8, ConfigMap web/10, ConfigMap web/12: bad 0; "+
		"ConfigMap web/1, ConfigMap web/3, ConfigMap web/5: bad 1; and 3 more objects", d)

	unreachable := &Error{Reason: ReasonClusterUnreachable, Err: errors.New("dial tcp 127.0.0.1:1: connection refused")}
	assert.Equal(t, "dial tcp 127.0.0.1:1: connection refused", unreachable.Detail())
	assert.Equal(t, "cluster_unreachable: dial tcp 127.0.0.1:1: connection refused", unreachable.Error())
	assert.Equal(t, "invalid_object", (&Error{Reason: ReasonInvalidObject}).Error())
}

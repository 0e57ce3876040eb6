package events

import (
	"fmt"
	"strings"
)

// MaxNameLength is the longest namespace or release name: a DNS-1123 label.
const MaxNameLength = 63

// ValidateName reports whether s is a DNS-1123 label (lower-case letters, digits and '-',
// starting and ending with a letter or digit, at most 63 characters). what names the field in
// the error ("namespace", "release").
func ValidateName(what, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: %s is empty", ErrInvalidName, what)
	case len(s) > MaxNameLength:
		return fmt.Errorf("%w: %s %q is %d characters long, at most %d are allowed", ErrInvalidName, what, s, len(s), MaxNameLength)
	case !isDNS1123Label(s):
		return fmt.Errorf("%w: %s %q must consist of lower-case letters, digits and '-', and start and end with a letter or digit", ErrInvalidName, what, s)
	}
	return nil
}

// Release identifies a release: the namespace it deploys into and its name.
type Release struct {
	Namespace string
	Name      string
}

// ParseRelease parses "namespace/name".
func ParseRelease(s string) (Release, error) {
	ns, name, ok := strings.Cut(s, "/")
	if !ok {
		return Release{}, fmt.Errorf("%w: release %q must be written namespace/name", ErrInvalidName, s)
	}
	r := Release{Namespace: ns, Name: name}
	return r, r.Validate()
}

// Validate reports whether both parts are DNS-1123 labels.
func (r Release) Validate() error {
	if err := ValidateName("namespace", r.Namespace); err != nil {
		return err
	}
	return ValidateName("release", r.Name)
}

// String returns "namespace/name", the form of the CloudEvents subject attribute.
func (r Release) String() string { return r.Namespace + "/" + r.Name }

// isDNS1123Label matches ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ without a regexp: it runs for every
// event published and received.
func isDNS1123Label(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0 && i < len(s)-1:
		default:
			return false
		}
	}
	return s != ""
}

package events

import "github.com/google/uuid"

// idSpace is the UUID namespace of derived event ids. Changing it changes every derived id, so
// it never changes.
var idSpace = uuid.MustParse("6f2b1f4e-7472-4f75-a070-652e64657631")

// DeriveID returns the id of the event that stage publishes for the revision started by
// correlationID. The same inputs always give the same id (a name-based UUID, RFC 9562 version
// 5), so when a handler is redelivered and publishes again, the stream's duplicate window drops
// the second copy. stage names the producer and what it produced, e.g. "troupe/renderer
// release.rendered"; a producer that publishes several events of one type per revision adds
// what tells them apart (a sequence number, an object).
func DeriveID(correlationID, stage string) string {
	return uuid.NewSHA1(idSpace, []byte(correlationID+"\x00"+stage)).String()
}

// NewID returns a fresh random id, for events that start something (release.requested).
func NewID() string { return uuid.NewString() }

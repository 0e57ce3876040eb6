package access

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/troupe-dev/troupe/events"
)

// Authority is an operator with two accounts: troupe's, whose users are the identities of
// Table, and the system account the server needs for its own traffic. Its keys are kept in a
// directory, so the account — the directory JetStream keeps the streams in — is the same at
// every start.
type Authority struct {
	operator, account, system nkeys.KeyPair
	operatorJWT, accountJWT   string
	systemJWT                 string
}

// Key files of an Authority's directory.
const (
	operatorKey = "operator.nk"
	accountKey  = "account.nk"
	systemKey   = "system.nk"
)

// LoadOrCreate returns the Authority whose keys are in dir, creating the keys (mode 0600, dir
// 0700) the first time.
func LoadOrCreate(dir string) (*Authority, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("credentials dir: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil { // MkdirAll leaves an existing one as it was
		return nil, fmt.Errorf("credentials dir: %w", err)
	}
	a := &Authority{}
	var err error
	if a.operator, err = loadOrCreateKey(filepath.Join(dir, operatorKey), nkeys.PrefixByteOperator); err != nil {
		return nil, err
	}
	if a.account, err = loadOrCreateKey(filepath.Join(dir, accountKey), nkeys.PrefixByteAccount); err != nil {
		return nil, err
	}
	if a.system, err = loadOrCreateKey(filepath.Join(dir, systemKey), nkeys.PrefixByteAccount); err != nil {
		return nil, err
	}
	opPub, _ := a.operator.PublicKey()
	sysPub, _ := a.system.PublicKey()
	oc := jwt.NewOperatorClaims(opPub)
	oc.Name = "troupe"
	oc.SystemAccount = sysPub
	if a.operatorJWT, err = oc.Encode(a.operator); err != nil {
		return nil, fmt.Errorf("operator: %w", err)
	}
	accPub, _ := a.account.PublicKey()
	ac := jwt.NewAccountClaims(accPub)
	ac.Name = "TROUPE"
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: jwt.NoLimit, DiskStorage: jwt.NoLimit,
		Streams: jwt.NoLimit, Consumer: jwt.NoLimit}
	if a.accountJWT, err = ac.Encode(a.operator); err != nil {
		return nil, fmt.Errorf("account: %w", err)
	}
	sc := jwt.NewAccountClaims(sysPub)
	sc.Name = "SYS"
	if a.systemJWT, err = sc.Encode(a.operator); err != nil {
		return nil, fmt.Errorf("system account: %w", err)
	}
	return a, nil
}

func loadOrCreateKey(path string, prefix nkeys.PrefixByte) (nkeys.KeyPair, error) {
	seed, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		kp, err := nkeys.CreatePair(prefix)
		if err != nil {
			return nil, err
		}
		seed, _ := kp.Seed()
		if err := writePrivate(path, seed); err != nil {
			return nil, err
		}
		return kp, nil
	}
	if err != nil {
		return nil, err
	}
	kp, err := nkeys.FromSeed(bytes.TrimSpace(seed))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if pub, _ := kp.PublicKey(); nkeys.Prefix(pub) != prefix {
		return nil, fmt.Errorf("%s: not the seed of the key it names", path)
	}
	return kp, nil
}

// writePrivate writes b to path, readable only by its owner, replacing what was there at once
// (a crash leaves the old file or the new one, never a part; two writers never share a
// temporary file).
func writePrivate(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*") // mode 0600
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // after the rename, nothing
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer dir.Close()
	return dir.Sync()
}

// Account is the public key of troupe's account: the server keeps its streams under
// <store>/jetstream/<Account>.
func (a *Authority) Account() string { pub, _ := a.account.PublicKey(); return pub }

// MaxControlLine is the control line a server must accept for troupe's users to connect
// (nats-server's max_control_line; its default, 4 KB, is too short for their JWTs, whose
// permissions take 5–8 KB).
const MaxControlLine = 32 * 1024

// Operator is the operator JWT a server trusts (nats-server's operator option).
func (a *Authority) Operator() string { return a.operatorJWT }

// Accounts are the account JWTs a server preloads (its resolver): troupe's and the system
// account, whose public key SystemAccount is.
func (a *Authority) Accounts() []string { return []string{a.accountJWT, a.systemJWT} }

// SystemAccount is the public key of the system account.
func (a *Authority) SystemAccount() string { pub, _ := a.system.PublicKey(); return pub }

// Creds returns a credentials file for id in the system of names: a user JWT with id's
// permissions, signed by the account, and the user's seed. A new user each call; the
// credentials are valid until the Authority's keys change.
func (a *Authority) Creds(id Identity, names events.Names) ([]byte, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, err
	}
	pub, _ := kp.PublicKey()
	uc := jwt.NewUserClaims(pub)
	uc.Name = id.Name
	uc.Tags.Add(events.CredsTag)
	p, err := id.Permissions(names)
	if err != nil {
		return nil, err
	}
	uc.Pub.Allow.Add(p.PubAllow...)
	uc.Pub.Deny.Add(p.PubDeny...)
	uc.Sub.Allow.Add(p.SubAllow...)
	uc.Sub.Deny.Add(p.SubDeny...)
	token, err := uc.Encode(a.account)
	if err != nil {
		return nil, fmt.Errorf("identity %s: %w", id.Name, err)
	}
	seed, _ := kp.Seed()
	return jwt.FormatUserConfig(token, seed)
}

// WriteCreds writes <dir>/<name>.creds (mode 0600) for every identity of Table, and returns
// their paths by name.
func (a *Authority) WriteCreds(dir string, names events.Names) (map[string]string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, id := range Table() {
		b, err := a.Creds(id, names)
		if err != nil {
			return nil, err
		}
		path := filepath.Join(dir, id.Name+".creds")
		if err := writePrivate(path, b); err != nil {
			return nil, err
		}
		out[id.Name] = path
	}
	return out, nil
}

// AdoptStore readies the store a server keeps its streams in (its StoreDir) for this Authority's
// account. Streams kept without auth (the global account, $G: a store `troupe dev` made before
// it turned auth on) are moved to the account, once. Streams of another account — the store's
// keys (account.nk) were lost or replaced — are an error naming it: started anyway, the server
// would show an empty system and the releases would look gone.
func (a *Authority) AdoptStore(storeDir string) error {
	js := filepath.Join(storeDir, "jetstream")
	global, mine := filepath.Join(js, "$G"), filepath.Join(js, a.Account()) // $G: the server's global account
	entries, err := os.ReadDir(js)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() && e.Name() != a.Account() && nkeys.IsValidPublicAccountKey(e.Name()) {
			return fmt.Errorf("the store %s holds the streams of account %s, not of this store's keys (account %s): put back the account.nk that made them, or move the store aside", storeDir, e.Name(), a.Account())
		}
	}
	if _, err := os.Stat(global); err != nil {
		return nil
	}
	if _, err := os.Stat(mine); err == nil {
		return nil // the account has streams of its own: leave $G alone
	}
	if err := os.Rename(global, mine); err != nil {
		return fmt.Errorf("move the store's streams to the account %s: %w", a.Account(), err)
	}
	return nil
}

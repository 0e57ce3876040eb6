package chaos

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Services runs replicas of troupe's services as processes and keeps them running: a process
// the harness killed is started again after a moment, and so is one that exited on its own
// (counted in Exits: a service that cannot reach NATS at start exits today).
type Services struct {
	bin, logs string
	args      func(name string) []string

	mu      sync.Mutex
	slots   []*slot
	kills   int
	exits   []string // "<slot>: <last log lines>" of processes that exited on their own
	stopped bool
	wg      sync.WaitGroup
}

type slot struct {
	name, id string // service, and service-replica
	log      string
	proc     *proc
	killed   bool // the harness killed the running process
}

// StartServices starts replicas of each of names (binaries in bin, logs in logs/<name>-<i>.log),
// with the flags args returns for a service.
func StartServices(bin, logs string, names []string, replicas int, args func(name string) []string) (*Services, error) {
	s := &Services{bin: bin, logs: logs, args: args}
	for _, n := range names {
		for i := range replicas {
			sl := &slot{name: n, id: fmt.Sprintf("%s-%d", n, i+1)}
			sl.log = filepath.Join(logs, sl.id+".log")
			s.slots = append(s.slots, sl)
		}
	}
	for _, sl := range s.slots {
		if err := s.start(sl); err != nil {
			s.Stop()
			return nil, err
		}
	}
	return s, nil
}

// start starts sl's process and a goroutine that restarts it when it ends; nothing once Stop
// was called (under the lock, so Stop sees every process started).
func (s *Services) start(sl *slot) error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil
	}
	p, err := startProc(sl.id, filepath.Join(s.bin, sl.name), sl.log, s.args(sl.name)...)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	sl.proc, sl.killed = p, false
	s.mu.Unlock()
	s.wg.Go(func() {
		<-p.done
		s.mu.Lock()
		stopped, killed := s.stopped, sl.killed
		if !stopped && !killed {
			s.exits = append(s.exits, fmt.Sprintf("%s exited on its own:\n%s", sl.id, tailFile(sl.log, 8)))
		}
		s.mu.Unlock()
		if stopped {
			return
		}
		time.Sleep(time.Duration(1000+rand.IntN(2000)) * time.Millisecond)
		if err := s.start(sl); err != nil {
			s.mu.Lock()
			s.exits = append(s.exits, fmt.Sprintf("%s could not be restarted: %v", sl.id, err))
			s.mu.Unlock()
		}
	})
	return nil
}

// KillRandom SIGKILLs one running service process, chosen at random, and returns its name; it
// is started again a moment later.
func (s *Services) KillRandom() string {
	s.mu.Lock()
	var up []*slot
	for _, sl := range s.slots {
		if sl.proc != nil && !sl.proc.exited() && !sl.killed {
			up = append(up, sl)
		}
	}
	if len(up) == 0 || s.stopped {
		s.mu.Unlock()
		return ""
	}
	sl := up[rand.IntN(len(up))]
	sl.killed = true
	s.kills++
	p := sl.proc
	s.mu.Unlock()
	p.kill()
	return sl.id
}

// Kills is how many processes KillRandom killed.
func (s *Services) Kills() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.kills
}

// Exits are the processes that exited without being killed, with their last log lines.
func (s *Services) Exits() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.exits...)
}

// WaitAllUp waits until every replica has a running process that logged it is ready since it
// last started.
func (s *Services) WaitAllUp(ctx context.Context) error {
	for {
		s.mu.Lock()
		var down []string
		for _, sl := range s.slots {
			if sl.proc == nil || sl.proc.exited() || !readySinceStart(sl) {
				down = append(down, sl.id)
			}
		}
		s.mu.Unlock()
		if len(down) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("services not up: %v: %w", down, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Stop stops every process (SIGTERM: they drain) and waits for them.
func (s *Services) Stop() {
	s.mu.Lock()
	s.stopped = true
	procs := make([]*proc, 0, len(s.slots))
	for _, sl := range s.slots {
		if sl.proc != nil {
			procs = append(procs, sl.proc)
		}
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() { p.stop(30 * time.Second) })
	}
	wg.Wait()
	s.wg.Wait()
}

// readySinceStart reports whether sl's log says, after the last start, that it is ready (the
// line serve.Run logs once the service receives events).
func readySinceStart(sl *slot) bool {
	b, err := os.ReadFile(sl.log)
	if err != nil {
		return false
	}
	if i := bytes.LastIndex(b, []byte("=== chaos: start")); i >= 0 {
		b = b[i:]
	}
	return bytes.Contains(b, []byte(`"`+sl.name+` ready"`))
}

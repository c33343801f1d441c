package session

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestBackgroundTakesARunSlot: a background run holds a run slot like any
// run, so a run of the same session waits for it (and says so), and starts
// once the background run is cancelled; Poll then gives the final result.
func TestBackgroundTakesARunSlot(t *testing.T) {
	sess := openSession(t, Config{})
	sess.rt.LimitRuns(2) // one session may hold all slots but one: 1
	ctx := context.Background()
	id, err := sess.Start(ctx, Request{Code: "print('bg', flush=True)\nimport time\ntime.sleep(600)"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for {
		b, err := sess.Poll(ctx, id, 0)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(b.Stdout.Text, "bg") {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	var mu sync.Mutex
	var statuses []string
	queued := make(chan struct{})
	var once sync.Once
	done := make(chan *Result, 1)
	go func() {
		res, err := sess.Run(ctx, Request{Code: "print('fg')", Status: func(s string) {
			mu.Lock()
			statuses = append(statuses, s)
			mu.Unlock()
			if strings.HasPrefix(s, "queued") {
				once.Do(func() { close(queued) })
			}
		}})
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	<-queued
	b, err := sess.Cancel(ctx, id, time.Minute)
	if err != nil || b.Running || b.Result == nil || !b.Result.Cancelled || !strings.Contains(b.Result.Stdout.Text, "bg") {
		t.Fatalf("cancel: %v %+v", err, b)
	}
	if res := <-done; res == nil || res.Stdout.Text != "fg\n" {
		t.Errorf("the queued run: %+v", res)
	}
	if _, err := sess.Poll(ctx, "run-nope", 0); err == nil {
		t.Errorf("Poll of an unknown run worked")
	}
}

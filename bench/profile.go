package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// profileMembers saves a CPU profile and an allocation profile (the
// allocations made during the window) of every member of c, each over d
// rounded down to whole seconds, as dir/<system>-<workload>-<member>.cpu.pprof
// and .allocs.pprof.
func profileMembers(ctx context.Context, c *cluster, workload, dir string, d time.Duration) error {
	secs := int(d / time.Second)
	if secs < 1 {
		return fmt.Errorf("profile %s: window shorter than a second", workload)
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, m := range c.members {
		for _, kind := range []string{"profile", "allocs"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				suffix := map[string]string{"profile": "cpu", "allocs": "allocs"}[kind]
				path := filepath.Join(dir, fmt.Sprintf("%s-%s-%s.%s.pprof", c.system, workload, m.args.Name, suffix))
				url := fmt.Sprintf("http://%s/debug/pprof/%s?seconds=%d", m.args.PprofAddr, kind, secs)
				if err := fetch(ctx, url, path); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}

func fetch(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("profile request %s: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("fetch profile %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("fetch profile %s: %s: %s", url, resp.Status, b)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("save profile: %w", err)
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return fmt.Errorf("save profile %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("save profile %s: %w", path, err)
	}
	return nil
}

// getPprof requests path of a member's pprof endpoint ("heap?debug=1");
// the caller closes the body.
func getPprof(ctx context.Context, m *memberProc, path string) (io.ReadCloser, error) {
	url := fmt.Sprintf("http://%s/debug/pprof/%s", m.args.PprofAddr, path)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("read %s of %s: %w", path, m.args.Name, err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		_ = resp.Body.Close()
		return nil, fmt.Errorf("read %s of %s: %s: %s", path, m.args.Name, resp.Status, b)
	}
	return resp.Body, nil
}

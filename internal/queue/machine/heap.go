package machine

// jobHeap is a binary min-heap of jobs under less, each job knowing its
// position (through pos) so that it can be removed or fixed in place.
type jobHeap struct {
	items []*job
	less  func(a, b *job) bool
	pos   func(j *job) *int
}

func (h *jobHeap) Len() int { return len(h.items) }

// top returns the least job, or nil.
func (h *jobHeap) top() *job {
	if len(h.items) == 0 {
		return nil
	}
	return h.items[0]
}

func (h *jobHeap) push(j *job) {
	*h.pos(j) = len(h.items)
	h.items = append(h.items, j)
	h.up(len(h.items) - 1)
}

func (h *jobHeap) pop() *job {
	if len(h.items) == 0 {
		return nil
	}
	j := h.items[0]
	h.remove(j)
	return j
}

// remove takes j out if it is in the heap.
func (h *jobHeap) remove(j *job) {
	i := *h.pos(j)
	if i < 0 || i >= len(h.items) || h.items[i] != j {
		return
	}
	last := len(h.items) - 1
	if i != last {
		h.swap(i, last)
	}
	h.items[last] = nil
	h.items = h.items[:last]
	*h.pos(j) = -1
	if i != last {
		if !h.down(i) {
			h.up(i)
		}
	}
}

// contains reports whether j is in the heap.
func (h *jobHeap) contains(j *job) bool {
	i := *h.pos(j)
	return i >= 0 && i < len(h.items) && h.items[i] == j
}

// fix restores order after j's key changed.
func (h *jobHeap) fix(j *job) {
	i := *h.pos(j)
	if !h.down(i) {
		h.up(i)
	}
}

func (h *jobHeap) swap(i, k int) {
	h.items[i], h.items[k] = h.items[k], h.items[i]
	*h.pos(h.items[i]) = i
	*h.pos(h.items[k]) = k
}

func (h *jobHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !h.less(h.items[i], h.items[p]) {
			return
		}
		h.swap(i, p)
		i = p
	}
}

func (h *jobHeap) down(i int) bool {
	start := i
	n := len(h.items)
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && h.less(h.items[r], h.items[l]) {
			m = r
		}
		if !h.less(h.items[m], h.items[i]) {
			break
		}
		h.swap(i, m)
		i = m
	}
	return i > start
}

// workerHeap orders the workers with room: fewest running jobs first, then
// by name.
type workerHeap struct{ items []*worker }

func workerLess(a, b *worker) bool {
	if a.running != b.running {
		return a.running < b.running
	}
	return a.name < b.name
}

func (h *workerHeap) Len() int { return len(h.items) }

func (h *workerHeap) top() *worker {
	if len(h.items) == 0 {
		return nil
	}
	return h.items[0]
}

func (h *workerHeap) push(w *worker) {
	w.idx = len(h.items)
	h.items = append(h.items, w)
	h.up(w.idx)
}

func (h *workerHeap) remove(w *worker) {
	i := w.idx
	if i < 0 || i >= len(h.items) || h.items[i] != w {
		return
	}
	last := len(h.items) - 1
	if i != last {
		h.swap(i, last)
	}
	h.items[last] = nil
	h.items = h.items[:last]
	w.idx = -1
	if i != last {
		if !h.down(i) {
			h.up(i)
		}
	}
}

func (h *workerHeap) contains(w *worker) bool {
	return w.idx >= 0 && w.idx < len(h.items) && h.items[w.idx] == w
}

func (h *workerHeap) fix(w *worker) {
	if !h.down(w.idx) {
		h.up(w.idx)
	}
}

func (h *workerHeap) swap(i, k int) {
	h.items[i], h.items[k] = h.items[k], h.items[i]
	h.items[i].idx = i
	h.items[k].idx = k
}

func (h *workerHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !workerLess(h.items[i], h.items[p]) {
			return
		}
		h.swap(i, p)
		i = p
	}
}

func (h *workerHeap) down(i int) bool {
	start := i
	n := len(h.items)
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && workerLess(h.items[r], h.items[l]) {
			m = r
		}
		if !workerLess(h.items[m], h.items[i]) {
			break
		}
		h.swap(i, m)
		i = m
	}
	return i > start
}

// countAtMost counts the jobs of a heap ordered by run time first
// (runAtLess) whose run time is at most t, visiting only those: the
// children of a job due after t are due after t too.
func (h *jobHeap) countAtMost(t int64) int64 {
	var n int64
	stack := []int{0}
	for len(stack) > 0 {
		i := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if i >= len(h.items) || h.items[i].runAt > t {
			continue
		}
		n++
		stack = append(stack, 2*i+1, 2*i+2)
	}
	return n
}

// Where the tracker keeps what must outlive the page: localStorage where the
// browser allows it, else memory. Strict privacy settings and sandboxed
// frames make localStorage throw; the tracker then still works, it only
// forgets at the end of the page. A full quota (the host app filled it) only
// refuses writes: what is stored is still read, so an opt-out or an anonymous
// id kept by an earlier page holds, and what could not be written is kept in
// memory for this page.

export interface Storage {
  /** Whether what is written outlives the page (and is shared by its tabs). */
  readonly lasting: boolean;
  get(name: string): string | null;
  /** False when storage refused the write (quota): the value then holds for this page only. */
  set(name: string, value: string): boolean;
  remove(name: string): void;
  /** The names that start with `prefix`. */
  names(prefix: string): string[];
}

/** The page's localStorage (memory where reading it throws). */
export function openStorage(): Storage {
  try {
    const local = window.localStorage;
    local.getItem("produktly:probe");
    return layered(local);
  } catch {
    return layered(null);
  }
}

/** localStorage, with what it refused to write kept in memory over it. */
export function layered(local: globalThis.Storage | null): Storage {
  const unsaved = new Map<string, string>();
  const stored = (name: string) => (local === null ? null : attempt(() => local.getItem(name), null));
  return {
    lasting: local !== null,
    get: (name) => unsaved.get(name) ?? stored(name),
    set(name, value) {
      const saved = local !== null && attempt(() => (local.setItem(name, value), true), false);
      if (saved) unsaved.delete(name);
      else unsaved.set(name, value);
      // Memory alone keeps all it can; only a refused localStorage write is news.
      return saved || local === null;
    },
    remove(name) {
      unsaved.delete(name);
      if (local !== null) attempt(() => local.removeItem(name), undefined);
    },
    names(prefix) {
      const found = new Set([...unsaved.keys()].filter((name) => name.startsWith(prefix)));
      if (local !== null) {
        attempt(() => {
          for (let i = 0; i < local.length; i++) {
            const name = local.key(i);
            if (name !== null && name.startsWith(prefix)) found.add(name);
          }
        }, undefined);
      }
      return [...found];
    },
  };
}

/** What `action` returns, or `otherwise` when it throws. */
export function attempt<T>(action: () => T, otherwise: T): T {
  try {
    return action();
  } catch {
    return otherwise;
  }
}

// Where the tracker keeps what must outlive the page: localStorage when the
// browser allows it, else memory. Strict privacy settings, sandboxed frames
// and a full quota make localStorage throw; the tracker then still works, it
// only forgets at the end of the page.

export interface Storage {
  /** Whether what is written outlives the page (and is shared by its tabs). */
  readonly lasting: boolean;
  get(name: string): string | null;
  /** False when the write failed (quota): what was there stays. */
  set(name: string, value: string): boolean;
  remove(name: string): void;
  /** The names that start with `prefix`. */
  names(prefix: string): string[];
}

export function openStorage(): Storage {
  try {
    const local = window.localStorage;
    const probe = "produktly:probe";
    local.setItem(probe, "1");
    local.removeItem(probe);
    return browserStorage(local);
  } catch {
    return memoryStorage();
  }
}

function browserStorage(local: globalThis.Storage): Storage {
  return {
    lasting: true,
    get: (name) => attempt(() => local.getItem(name), null),
    set: (name, value) =>
      attempt(() => {
        local.setItem(name, value);
        return true;
      }, false),
    remove: (name) => attempt(() => local.removeItem(name), undefined),
    names: (prefix) =>
      attempt(() => {
        const found: string[] = [];
        for (let i = 0; i < local.length; i++) {
          const name = local.key(i);
          if (name !== null && name.startsWith(prefix)) found.push(name);
        }
        return found;
      }, []),
  };
}

function memoryStorage(): Storage {
  const values = new Map<string, string>();
  return {
    lasting: false,
    get: (name) => values.get(name) ?? null,
    set: (name, value) => {
      values.set(name, value);
      return true;
    },
    remove: (name) => {
      values.delete(name);
    },
    names: (prefix) => [...values.keys()].filter((name) => name.startsWith(prefix)),
  };
}

function attempt<T>(action: () => T, otherwise: T): T {
  try {
    return action();
  } catch {
    return otherwise;
  }
}

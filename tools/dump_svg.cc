// SPDX-License-Identifier: Apache-2.0
// dump_svg: turns the host stage-2 table `pkvmctl dump` prints (captured from
// a console log) into an SVG map of physical memory. Each row is 2 MiB (one
// level-2 block), 2 px per 4 KiB page; colour = owner and state, pattern =
// the host mapping's block size (1G, 2M, 4K) or none (not mapped). Runs of
// identical rows are folded into one row with a count, and stretches with
// no record are marked as gaps, so a sparse 40-bit address space stays small.
//
// Usage: dump_svg [--index N] [--title TEXT] [-o OUT.svg] LOG|-
//   Uses the last complete dump in LOG (S2-BEGIN .. S2-END), or the N-th
//   (0-based) with --index. Exit 1 when no dump is found.
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace {

using u64 = uint64_t;

constexpr u64 kPage = 4096;
constexpr u64 kRowPages = 512;  // 2 MiB
constexpr int kPx = 2;          // pixels per page
constexpr int kRowH = 7;
constexpr int kLeft = 150;      // address column
constexpr int kWidth = kLeft + int(kRowPages) * kPx + 20;

struct Run {
  u64 start, end;  // pfns, end exclusive
  std::string owner, state, map;
};

struct Dump {
  std::string header;
  std::vector<Run> runs;
};

std::string trim_cr(std::string s) {
  while (!s.empty() && (s.back() == '\r' || s.back() == '\n')) s.pop_back();
  return s;
}

// Parses every complete dump in the stream.
std::vector<Dump> parse(std::istream& in) {
  std::vector<Dump> dumps;
  Dump cur;
  bool open = false;
  std::string line;
  while (std::getline(in, line)) {
    line = trim_cr(line);
    const size_t b = line.find("S2-BEGIN");
    if (b != std::string::npos) {
      cur = Dump{line.substr(b + 9), {}};
      open = true;
      continue;
    }
    if (!open) continue;
    if (line.find("S2-END") != std::string::npos) {
      dumps.push_back(cur);
      open = false;
      continue;
    }
    const size_t p = line.find("S2 0x");
    if (p == std::string::npos) continue;
    char owner[32], state[32], map[8];
    unsigned long long s = 0, e = 0, n = 0;
    if (sscanf(line.c_str() + p, "S2 0x%llx 0x%llx %llu %31s %31s %7s", &s, &e, &n, owner, state, map) != 6) continue;
    if (e <= s || s % kPage || e % kPage) continue;  // a line mangled by interleaved console output
    cur.runs.push_back(Run{s / kPage, e / kPage, owner, state, map});
  }
  return dumps;
}

std::string colour(const Run& r) {
  if (r.owner == "host") {
    if (r.state == "shared-owned") return "#f2a516";  // lent to the hypervisor or a guest
    return "#9fb4cc";                                  // the host's alone
  }
  if (r.owner == "hyp") return "#d43d3d";
  // Guests: one hue each, darker when the guest shares the page with the host.
  unsigned g = 0;
  sscanf(r.owner.c_str(), "guest%u", &g);
  static const char* kGuest[] = {"#2e9e44", "#1f77b4", "#8c4fbf", "#17a2a2", "#b5651d", "#7a9a01", "#c2185b", "#5d6d7e"};
  std::string c = kGuest[g % 8];
  return c;
}

const char* pattern(const Run& r) {
  if (r.map == "4K") return "url(#p4k)";
  if (r.map == "1G") return "url(#p1g)";
  return nullptr;
}

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<')
      o += "&lt;";
    else if (c == '>')
      o += "&gt;";
    else if (c == '&')
      o += "&amp;";
    else
      o += c;
  }
  return o;
}

std::string hexaddr(u64 a) {
  char b[32];
  snprintf(b, sizeof(b), "0x%010" PRIx64, a);
  return b;
}

std::string size_str(u64 bytes) {
  char b[32];
  if (bytes >= (u64{1} << 30) && bytes % (u64{1} << 30) == 0)
    snprintf(b, sizeof(b), "%" PRIu64 " GiB", bytes >> 30);
  else if (bytes >= (u64{1} << 20))
    snprintf(b, sizeof(b), "%.1f MiB", double(bytes) / double(1 << 20));
  else
    snprintf(b, sizeof(b), "%" PRIu64 " KiB", bytes >> 10);
  return b;
}

// One drawn piece of a row: pages [a, b) of the row in run r.
struct Seg {
  u64 a, b;
  const Run* r;
  bool operator==(const Seg& o) const {
    return a == o.a && b == o.b && r->owner == o.r->owner && r->state == o.r->state && r->map == o.r->map;
  }
};

std::string render(const Dump& d, const std::string& title) {
  std::vector<Run> runs = d.runs;
  std::sort(runs.begin(), runs.end(), [](const Run& x, const Run& y) { return x.start < y.start; });
  // Rows that intersect a run, with their segments.
  std::map<u64, std::vector<Seg>> rows;
  for (const Run& r : runs) {
    for (u64 row = r.start / kRowPages; row * kRowPages < r.end; ++row) {
      const u64 base = row * kRowPages;
      const u64 a = std::max(r.start, base) - base, b = std::min(r.end, base + kRowPages) - base;
      rows[row].push_back(Seg{a, b, &r});
      if (rows.size() > (size_t{1} << 20)) return "";  // not a dump of this machine's memory
    }
  }
  std::ostringstream body;
  int y = 0;
  u64 prev_row = ~u64{0};
  auto draw_row = [&](u64 row, const std::vector<Seg>& segs) {
    body << "<text x=\"" << kLeft - 6 << "\" y=\"" << y + kRowH - 1 << "\" class=\"addr\">"
         << hexaddr(row * kRowPages * kPage) << "</text>\n";
    body << "<rect x=\"" << kLeft << "\" y=\"" << y << "\" width=\"" << kRowPages * kPx << "\" height=\"" << kRowH
         << "\" class=\"empty\"/>\n";
    for (const Seg& s : segs) {
      const int x = kLeft + int(s.a) * kPx, w = int(s.b - s.a) * kPx;
      // Memory of other owners is never mapped for the host: only host
      // memory the host has not touched yet is drawn faded.
      const bool faded = s.r->map == "-" && s.r->owner == "host";
      body << "<rect x=\"" << x << "\" y=\"" << y << "\" width=\"" << w << "\" height=\"" << kRowH << "\" fill=\""
           << colour(*s.r) << "\"" << (faded ? " fill-opacity=\"0.45\"" : "") << "><title>"
           << esc(hexaddr((row * kRowPages + s.a) * kPage) + "-" + hexaddr((row * kRowPages + s.b) * kPage) + " " +
                  s.r->owner + " " + s.r->state + " map " + s.r->map)
           << "</title></rect>\n";
      if (s.r->state == "shared-borrowed")
        body << "<rect x=\"" << x << "\" y=\"" << y << "\" width=\"" << w << "\" height=\"" << kRowH
             << "\" fill=\"url(#pborrow)\"/>\n";
      if (const char* p = pattern(*s.r))
        body << "<rect x=\"" << x << "\" y=\"" << y << "\" width=\"" << w << "\" height=\"" << kRowH << "\" fill=\""
             << p << "\"/>\n";
      // 2M blocks: a tick at the block's left edge shows the block boundary.
      if (s.r->map == "2M" && s.a == 0)
        body << "<line x1=\"" << x << "\" y1=\"" << y << "\" x2=\"" << x << "\" y2=\"" << y + kRowH
             << "\" class=\"blk\"/>\n";
    }
    y += kRowH + 1;
  };
  std::vector<std::pair<u64, std::vector<Seg>>> list(rows.begin(), rows.end());
  for (size_t i = 0; i < list.size();) {
    const u64 row = list[i].first;
    if (prev_row != ~u64{0} && row != prev_row + 1) {
      const u64 gap = (row - prev_row - 1) * kRowPages * kPage;
      body << "<text x=\"" << kLeft << "\" y=\"" << y + 10 << "\" class=\"note\">... " << size_str(gap)
           << " with no record (the host's, not mapped yet, or outside memory)</text>\n";
      y += 14;
    }
    // Fold a stretch of identical consecutive rows.
    size_t j = i + 1;
    while (j < list.size() && list[j].first == list[j - 1].first + 1 && list[j].second == list[i].second) ++j;
    draw_row(row, list[i].second);
    if (j - i >= 3) {
      body << "<text x=\"" << kLeft << "\" y=\"" << y + 10 << "\" class=\"note\">&#8942; " << (j - i - 1)
           << " more identical 2 MiB rows (" << size_str((j - i - 1) * kRowPages * kPage) << ", to "
           << hexaddr((list[j - 1].first + 1) * kRowPages * kPage) << ")</text>\n";
      y += 14;
      prev_row = list[j - 1].first;
      i = j;
    } else {
      prev_row = row;
      ++i;
    }
  }
  // Legend.
  std::map<std::string, std::string> legend;
  u64 pages_by[4] = {0, 0, 0, 0};
  for (const Run& r : runs) {
    legend[r.owner + " " + r.state] = colour(r);
    if (r.owner == "host") pages_by[r.state == "shared-owned" ? 1 : 0] += r.end - r.start;
    else if (r.owner == "hyp") pages_by[2] += r.end - r.start;
    else pages_by[3] += r.end - r.start;
  }
  std::ostringstream head;
  const int legend_y = 44;
  int ly = legend_y;
  std::ostringstream leg;
  int lx = kLeft;
  for (const auto& [name, c] : legend) {
    leg << "<rect x=\"" << lx << "\" y=\"" << ly << "\" width=\"14\" height=\"10\" fill=\"" << c << "\"/>"
        << "<text x=\"" << lx + 18 << "\" y=\"" << ly + 9 << "\" class=\"leg\">" << esc(name) << "</text>\n";
    lx += 240;
    if (lx > kWidth - 240) {
      lx = kLeft;
      ly += 14;
    }
  }
  ly += 16;
  const struct {
    const char* fill;
    const char* what;
  } marks[] = {{"url(#p1g)", "1 GiB block"},
               {nullptr, "2 MiB block"},
               {"url(#p4k)", "4 KiB pages"},
               {"url(#pborrow)", "borrowed by the host"}};
  lx = kLeft;
  for (const auto& m : marks) {
    leg << "<rect x=\"" << lx << "\" y=\"" << ly << "\" width=\"14\" height=\"10\" fill=\"#bbb\"/>";
    if (m.fill) leg << "<rect x=\"" << lx << "\" y=\"" << ly << "\" width=\"14\" height=\"10\" fill=\"" << m.fill << "\"/>";
    leg << "<text x=\"" << lx + 18 << "\" y=\"" << ly + 9 << "\" class=\"leg\">" << m.what << "</text>\n";
    lx += 170;
  }
  leg << "<rect x=\"" << lx << "\" y=\"" << ly << "\" width=\"14\" height=\"10\" fill=\"#9fb4cc\" fill-opacity=\"0.45\"/>"
      << "<text x=\"" << lx + 18 << "\" y=\"" << ly + 9 << "\" class=\"leg\">host, not mapped yet</text>\n";
  ly += 22;
  char summary[256];
  snprintf(summary, sizeof(summary),
           "%zu ranges: host alone %s, host shared %s, hypervisor %s, guests %s (rows of 2 MiB, 2 px per 4 KiB page)",
           runs.size(), size_str(pages_by[0] * kPage).c_str(), size_str(pages_by[1] * kPage).c_str(),
           size_str(pages_by[2] * kPage).c_str(), size_str(pages_by[3] * kPage).c_str());
  // Below the map: every range that is not the host's alone, so that even
  // a single page (2 px above) can be read.
  int listed = 0;
  y += 8;
  for (const Run& r : runs) {
    if (r.owner == "host" && r.state == "owned") continue;
    if (listed == 0) {
      body << "<text x=\"10\" y=\"" << y + 12 << "\" class=\"leg\">Ranges not owned by the host alone:</text>\n";
      y += 16;
    }
    if (++listed > 48) {
      body << "<text x=\"24\" y=\"" << y + 10 << "\" class=\"note\">... and more</text>\n";
      y += 14;
      break;
    }
    body << "<rect x=\"24\" y=\"" << y + 2 << "\" width=\"10\" height=\"9\" fill=\"" << colour(r) << "\"/>"
         << "<text x=\"40\" y=\"" << y + 10 << "\" class=\"leg\">"
         << esc(hexaddr(r.start * kPage) + "-" + hexaddr(r.end * kPage) + "  " + size_str((r.end - r.start) * kPage) +
                "  " + r.owner + " " + r.state + (r.map == "-" ? "" : "  (host maps it: " + r.map + ")"))
         << "</text>\n";
    y += 13;
  }
  std::ostringstream out;
  const int height = ly + y + 20;
  out << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << kWidth << "\" height=\"" << height
      << "\" viewBox=\"0 0 " << kWidth << " " << height << "\">\n"
      << "<defs>\n"
      << "<pattern id=\"p4k\" width=\"4\" height=\"4\" patternUnits=\"userSpaceOnUse\">"
         "<rect width=\"1\" height=\"4\" fill=\"#000\" fill-opacity=\"0.28\"/></pattern>\n"
      << "<pattern id=\"p1g\" width=\"8\" height=\"8\" patternUnits=\"userSpaceOnUse\">"
         "<path d=\"M0,8 L8,0\" stroke=\"#000\" stroke-opacity=\"0.3\" stroke-width=\"1.5\"/></pattern>\n"
      << "<pattern id=\"pborrow\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\">"
         "<circle cx=\"3\" cy=\"3\" r=\"1.2\" fill=\"#fff\" fill-opacity=\"0.8\"/></pattern>\n"
      << "</defs>\n"
      << "<style>text{font-family:monospace} .addr{font-size:9px;text-anchor:end;fill:#333} "
         ".note{font-size:10px;fill:#666;font-style:italic} .leg{font-size:11px;fill:#222} "
         ".title{font-size:16px;font-weight:bold} .sub{font-size:11px;fill:#444} "
         ".empty{fill:#fff;stroke:#e4e4e4;stroke-width:0.5} .blk{stroke:#fff;stroke-width:1}</style>\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"#fafafa\"/>\n"
      << "<text x=\"10\" y=\"20\" class=\"title\">" << esc(title) << "</text>\n"
      << "<text x=\"10\" y=\"36\" class=\"sub\">" << esc(summary) << "</text>\n"
      << leg.str() << "<g transform=\"translate(0," << ly << ")\">\n"
      << body.str() << "</g>\n</svg>\n";
  return out.str();
}

}  // namespace

int main(int argc, char** argv) {
  std::string in_path, out_path, title = "pKVM host stage-2: physical memory by owner";
  long index = -1;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if ((a == "-o" || a == "--output") && i + 1 < argc) {
      out_path = argv[++i];
    } else if (a == "--index" && i + 1 < argc) {
      index = strtol(argv[++i], nullptr, 0);
    } else if (a == "--title" && i + 1 < argc) {
      title = argv[++i];
    } else if (a == "-h" || a == "--help") {
      printf("usage: dump_svg [--index N] [--title TEXT] [-o OUT.svg] LOG|-\n"
             "  Draws the last (or N-th) `pkvmctl dump` table found in LOG as an SVG map.\n");
      return 0;
    } else if (in_path.empty()) {
      in_path = a;
    } else {
      fprintf(stderr, "dump_svg: unexpected argument %s\n", a.c_str());
      return 2;
    }
  }
  if (in_path.empty()) {
    fprintf(stderr, "usage: dump_svg [--index N] [--title TEXT] [-o OUT.svg] LOG|-\n");
    return 2;
  }
  std::vector<Dump> dumps;
  if (in_path == "-") {
    dumps = parse(std::cin);
  } else {
    std::ifstream f(in_path);
    if (!f) {
      fprintf(stderr, "dump_svg: cannot read %s\n", in_path.c_str());
      return 1;
    }
    dumps = parse(f);
  }
  if (dumps.empty()) {
    fprintf(stderr, "dump_svg: no complete dump (S2-BEGIN .. S2-END) in %s\n", in_path.c_str());
    return 1;
  }
  if (index >= long(dumps.size())) {
    fprintf(stderr, "dump_svg: only %zu dump(s) in %s\n", dumps.size(), in_path.c_str());
    return 1;
  }
  const Dump& d = dumps[index < 0 ? dumps.size() - 1 : size_t(index)];
  if (d.runs.empty()) {
    fprintf(stderr, "dump_svg: the dump has no ranges\n");
    return 1;
  }
  const std::string svg = render(d, title);
  if (svg.empty()) {
    fprintf(stderr, "dump_svg: the dump describes more than 2 TiB in rows: refusing\n");
    return 1;
  }
  if (out_path.empty()) {
    fwrite(svg.data(), 1, svg.size(), stdout);
  } else {
    std::ofstream o(out_path);
    o << svg;
    if (!o) {
      fprintf(stderr, "dump_svg: cannot write %s\n", out_path.c_str());
      return 1;
    }
    fprintf(stderr, "dump_svg: %zu ranges -> %s\n", d.runs.size(), out_path.c_str());
  }
  return 0;
}

// The `oclip` subcommands. Each takes the arguments after its name, prints
// its output on stdout and errors as one line on stderr, and returns the
// process exit code: 0 success, 1 failure, 2 usage error.

#ifndef OCLIP_CLI_COMMANDS_H_
#define OCLIP_CLI_COMMANDS_H_

namespace oclip::cli {

int RunModels(int argc, char** argv);
int RunEncode(int argc, char** argv);
int RunBench(int argc, char** argv);
int RunClassify(int argc, char** argv);
int RunEmbed(int argc, char** argv);
int RunIndex(int argc, char** argv);
int RunFetch(int argc, char** argv);
int RunServe(int argc, char** argv);
int RunClient(int argc, char** argv);
int RunLaunch(int argc, char** argv);
int RunTrain(int argc, char** argv);
// `oclip bench serve|embed|index|train|soak` (cli/bench_serve.cc, bench_embed.cc,
// bench_index.cc, bench_train.cc, bench_soak.cc), reached through RunBench.
int RunBenchServe(int argc, char** argv);
int RunBenchEmbed(int argc, char** argv);
int RunBenchIndex(int argc, char** argv);
int RunBenchTrain(int argc, char** argv);
int RunBenchSoak(int argc, char** argv);

}  // namespace oclip::cli

#endif  // OCLIP_CLI_COMMANDS_H_

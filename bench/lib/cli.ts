import { parseArgs, type ParseArgsConfig } from 'node:util';

type Options = NonNullable<ParseArgsConfig['options']>;

/** The command line of one bench script: its usage text, exit 2 on bad arguments, exit 0 on --help. */
export interface BenchCli {
  /** Prints `script: message` and the usage text, then exits 2. */
  usage(message: string): never;
  /** Parses `argv` against `options` (plus --help, answered here); bad flags end in usage(). */
  parse<O extends Options>(argv: string[], options: O): ReturnType<typeof parseArgs<{ args: string[]; options: O }>>['values'];
}

/** Builds the command-line helpers every bench script shares (node:util parseArgs). */
export function benchCli(script: string, usageText: string): BenchCli {
  const usage = (message: string): never => {
    process.stderr.write(`${script}: ${message}\n${usageText}`);
    process.exit(2);
  };
  return {
    usage,
    parse(argv, options) {
      if (argv.includes('--help')) {
        process.stdout.write(usageText);
        process.exit(0);
      }
      try {
        return parseArgs({ args: argv, options }).values;
      } catch (err) {
        return usage((err as Error).message);
      }
    },
  };
}

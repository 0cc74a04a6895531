/**
 * The workload registry, in run order. A new workload is a module exporting a Workload; add it here.
 */
import type { Workload } from '../context.js';
import { cliSmallFiles } from './cli.js';
import { concurrentCli } from './concurrent.js';
import { largeTransfers } from './large.js';
import { bigListing } from './list.js';
import { idleSessions, rssGrowth } from './memory.js';
import { mixedClients } from './mixed.js';
import { smallFiles } from './small.js';

export const WORKLOADS: readonly Workload[] = [largeTransfers, smallFiles, cliSmallFiles, bigListing, concurrentCli, mixedClients, rssGrowth, idleSessions];
